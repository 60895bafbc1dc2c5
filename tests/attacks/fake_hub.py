#!/usr/bin/env python3
"""A hostile Hugging Face endpoint, CDN and Neuronpedia server for tests/attacks/test_net.sh.

    python3 tests/attacks/fake_hub.py LOG [HOST] [OFFSITE]   # prints "PORT <n>", then serves

Every request's request line and headers are appended to LOG (to look for leaked secrets).
HOST is the address to listen on (default 127.0.0.1). OFFSITE ("127.0.0.2:<port>") is another
server's address: the "offsite" files redirect there through a URL that starts with this
server's own address ("http://127.0.0.1:<port>@127.0.0.2:<port>/...").

Hugging Face: HEAD/GET /{org}/{repo}/resolve/{rev}/{path}, with the repo naming the attack:
  liar       HEAD announces 100 bytes; GET sends an endless body without Content-Length
  linked     HEAD redirects to /cdn/ with X-Linked-Size 100; the CDN sends an endless chunked body
  bigcl      HEAD announces 100 bytes; GET announces 10 GB in Content-Length and streams
  nosize     no size anywhere; GET sends an endless body
  dribble    1000 bytes announced, sent at 2 bytes a second
  trickle    1 MB announced, sent at 40 kB/s (fast enough for any rate rule, too slow for a deadline)
  silent     GET: the connection is accepted and nothing is ever sent
  offsite    HEAD redirects (X-Linked-Size, X-Linked-Etag) to OFFSITE; the file is served there
  good       a small file, honestly described
Hugging Face listings: GET /api/models/attack/{repo}/revision/{rev} and .../tree/{rev}[/{path}], with
the repo naming the attack (the honest part of a listing: config.yaml and layer_0.safetensors):
  list-traversal   a sibling "../../outside/layer_1.safetensors"
  list-absolute    a sibling "/etc/layer_1.safetensors"
  list-control     a sibling with a BEL character in its name
  list-badsha      the commit "../../../../outside"
  list-endless     the answer an endless siblings array
  list-html        an HTML page instead of JSON
  list-slow        the answer at 2 bytes a second
  list-redirect    a redirect to OFFSITE through a URL starting with this server's address
  (the next four list 1,001 siblings, more than huggingface_hub trusts, so the tree API is asked)
  list-manyfiles   tree pages of 1,000 files, each linking to the next, without end
  list-loop        empty tree pages, each linking to itself
  list-offsite     a tree page whose next page is on OFFSITE
  list-outside     a tree page naming a file in another folder
  list-commitswap  the listing names commit abab...; a file asked at that commit answers for another
  list-liar        an honest listing; layer_0.safetensors announced as 100 bytes, sent without end
Neuronpedia: /np/api/feature/{model}/...  with model
  dribble    a JSON body at 2 bytes a second     endless   an endless body without length
  busy       429 with Retry-After: 1 forever     offsite   a redirect to OFFSITE
"""
import hashlib
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOG = sys.argv[1]
HOST = sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1"
OFFSITE = sys.argv[3] if len(sys.argv) > 3 else ""
COMMIT = "0123456789abcdef0123456789abcdef01234567"
GOOD = b"an honest file\n" * 100
FAKE_SHA = "ab" * 32
LIST_SHA = "ab" * 20   # the commit list-commitswap names
lock = threading.Lock()


def sha(b):
    return hashlib.sha256(b).hexdigest()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def note(self):
        with lock, open(LOG, "a") as f:
            f.write("%s %s %s\n%s\n" % (HOST, self.command, self.path, str(self.headers)))

    def head_only(self, status, headers):
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()

    def endless(self, chunked=False, limit=1 << 31):
        """Sends bytes until the client goes away (or limit bytes: the test never waits that long)."""
        block = b"x" * 65536
        sent = 0
        try:
            while sent < limit:
                if chunked:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
                else:
                    self.wfile.write(block)
                sent += len(block)
        except OSError:
            pass
        with lock, open(LOG, "a") as f:
            f.write("# sent %d bytes of an endless body\n" % sent)
        self.close_connection = True

    def slowly(self, data, step, pause):
        try:
            for i in range(0, len(data), step):
                self.wfile.write(data[i:i + step])
                self.wfile.flush()
                time.sleep(pause)
        except OSError:
            pass
        self.close_connection = True

    def meta(self, size, etag=FAKE_SHA, extra=None):
        h = {"X-Repo-Commit": COMMIT, "ETag": '"%s"' % etag}
        if size is not None:
            h["Content-Length"] = str(size)
        h.update(extra or {})
        return h

    def do_HEAD(self):
        self.note()
        self.route(head=True)

    def do_GET(self):
        self.note()
        self.route(head=False)

    def js(self, obj, extra=None):
        body = json.dumps(obj).encode()
        h = {"Content-Type": "application/json", "Content-Length": str(len(body))}
        h.update(extra or {})
        self.head_only(200, h)
        self.wfile.write(body)

    def api(self, org, name, kind, query):
        port = self.server.server_address[1]
        me = "http://127.0.0.1:%d" % port
        sib = [{"rfilename": "config.yaml"}, {"rfilename": "layer_0.safetensors"}]
        if kind == "revision":
            commit = LIST_SHA if name == "list-commitswap" else COMMIT
            if name == "list-traversal":
                sib.append({"rfilename": "../../outside/layer_1.safetensors"})
            elif name == "list-absolute":
                sib.append({"rfilename": "/etc/layer_1.safetensors"})
            elif name == "list-control":
                sib.append({"rfilename": "layer_\x07.safetensors"})
            elif name == "list-badsha":
                commit = "../../../../outside"
            elif name in ("list-manyfiles", "list-loop", "list-offsite", "list-outside"):
                sib = [{"rfilename": "f%d" % i} for i in range(1001)]
            elif name == "list-endless":
                self.head_only(200, {"Content-Type": "application/json", "Connection": "close"})
                self.wfile.write(b'{"sha": "%s", "siblings": [' % COMMIT.encode())
                return self.endless()
            elif name == "list-html":
                body = b"<html><body>maintenance</body></html>"
                self.head_only(200, {"Content-Type": "text/html", "Content-Length": str(len(body))})
                return self.wfile.write(body)
            elif name == "list-slow":
                body = json.dumps({"sha": COMMIT, "siblings": sib}).encode()
                self.head_only(200, {"Content-Type": "application/json", "Content-Length": str(len(body))})
                return self.slowly(body, 2, 1.0)
            elif name == "list-redirect":
                return self.head_only(302, {"Content-Length": "0", "Location": "%s@%s/api/models/attack/good/revision/main"
                                            % (me, OFFSITE)})
            return self.js({"id": org + "/" + name, "sha": commit, "siblings": sib})
        # tree
        cursor = int(query.split("cursor=")[1]) if "cursor=" in query else 0
        nxt = "%s/api/models/%s/%s/tree/%s?recursive=false&expand=false&cursor=%d" % (me, org, name, COMMIT, cursor + 1)
        if name == "list-manyfiles":
            self.js([{"type": "file", "path": "f%d_%d" % (cursor, i), "size": 1} for i in range(1000)],
                    {"Link": '<%s>; rel="next"' % nxt})
        elif name == "list-loop":
            self.js([], {"Link": '<%s>; rel="next"' % nxt})
        elif name == "list-offsite":
            self.js([{"type": "file", "path": "layer_0.safetensors", "size": 1}],
                    {"Link": '<%s@%s/api/models/%s/%s/tree/%s?cursor=1>; rel="next"' % (me, OFFSITE, org, name, COMMIT)})
        elif name == "list-outside":
            self.js([{"type": "file", "path": "other/layer_0.safetensors", "size": 1}])
        else:
            self.head_only(404, {"Content-Length": "0"})

    def route(self, head):
        parts = self.path.split("?")[0].strip("/").split("/")
        if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] in ("revision", "tree") and not head:
            return self.api(parts[2], parts[3], parts[4], self.path.split("?", 1)[1] if "?" in self.path else "")
        if parts[0] == "np":
            return self.neuronpedia(parts)
        if parts[0] == "cdn":
            return self.cdn(parts[1:])
        if len(parts) < 5 or parts[2] != "resolve":
            self.head_only(404, {"Content-Length": "0"})
            return
        attack = parts[1]
        if attack == "good":
            self.head_only(200, self.meta(len(GOOD), sha(GOOD)))
            if not head:
                self.wfile.write(GOOD)
        elif attack == "liar":
            if head:
                return self.head_only(200, self.meta(100))
            self.head_only(200, {"Connection": "close", "Content-Type": "application/octet-stream"})
            self.endless()
        elif attack == "linked":
            self.head_only(302, self.meta(0, extra={"X-Linked-Size": "100", "X-Linked-Etag": '"%s"' % FAKE_SHA,
                                                    "Location": "http://127.0.0.1:%d/cdn/linked" % self.server.server_address[1]}))
        elif attack == "bigcl":
            if head:
                return self.head_only(200, self.meta(100))
            self.head_only(200, {"Content-Length": "10000000000"})
            self.endless()
        elif attack == "nosize":
            self.head_only(200, self.meta(None, extra={"Connection": "close"}))
            if not head:
                self.endless()
        elif attack == "dribble":
            self.head_only(200, self.meta(1000))
            if not head:
                self.slowly(b"d" * 1000, 2, 1.0)
        elif attack == "trickle":
            self.head_only(200, self.meta(1 << 20))
            if not head:
                self.slowly(b"t" * (1 << 20), 4096, 0.1)
        elif attack == "silent":
            if head:
                return self.head_only(200, self.meta(100))
            time.sleep(120)
            self.close_connection = True
        elif attack == "list-commitswap":   # asked at LIST_SHA, answers for COMMIT
            self.head_only(200, self.meta(len(GOOD), sha(GOOD)))
            if not head:
                self.wfile.write(GOOD)
        elif attack == "list-liar":
            if head:
                return self.head_only(200, self.meta(100))
            self.head_only(200, {"Connection": "close", "Content-Type": "application/octet-stream"})
            self.endless()
        elif attack == "offsite":
            self.head_only(302, self.meta(0, extra={
                "X-Linked-Size": str(len(GOOD)), "X-Linked-Etag": '"%s"' % sha(GOOD),
                "Location": "http://127.0.0.1:%d@%s/cdn/good" % (self.server.server_address[1], OFFSITE)}))
        else:
            self.head_only(404, {"Content-Length": "0"})

    def cdn(self, parts):
        if parts and parts[0] == "linked":
            self.head_only(200, {"Transfer-Encoding": "chunked"})
            self.endless(chunked=True)
        elif parts and parts[0] == "good":
            self.head_only(200, {"Content-Length": str(len(GOOD))})
            self.wfile.write(GOOD)
        else:
            self.head_only(404, {"Content-Length": "0"})

    def neuronpedia(self, parts):
        model = parts[3] if len(parts) > 3 else ""
        feature = b'{"modelId": "m", "layer": "0-x", "index": "1", "explanations": []}'
        if model == "dribble":
            self.head_only(200, {"Content-Type": "application/json", "Content-Length": str(len(feature))})
            self.slowly(feature, 2, 1.0)
        elif model == "endless":
            self.head_only(200, {"Content-Type": "application/json", "Connection": "close"})
            self.endless()
        elif model == "busy":
            self.head_only(429, {"Retry-After": "1", "Content-Length": "0"})
        elif model == "offsite":
            self.head_only(302, {"Content-Length": "0", "Location": "http://127.0.0.1:%d@%s/np/api/feature/good/0-x/1"
                                 % (self.server.server_address[1], OFFSITE)})
        else:
            self.head_only(200, {"Content-Type": "application/json", "Content-Length": str(len(feature))})
            self.wfile.write(feature)


class Server(ThreadingHTTPServer):
    daemon_threads = True


srv = Server((HOST, 0), Handler)
print("PORT %d" % srv.server_address[1], flush=True)
srv.serve_forever()
