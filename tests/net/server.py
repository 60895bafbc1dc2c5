#!/usr/bin/env python3
"""Loopback test server for ctrace's network code: Neuronpedia (fixtures and synthetic
features), Hugging Face (resolve URLs, LFS redirects to a CDN path, Range), and faults.

    python3 tests/net/server.py FIXTURES_DIR HF_FILES_DIR   # prints "PORT <n>" then serves

Routes
  /np/api/feature/{model}/{source}/{index}    GET  one feature
  /np/api/features                            POST batch (array body)
  /np/api/explanation/search                  POST search
  /np/api/graph/signed-put                    POST {"filename", "contentLength", "contentType"} (x-api-key
                                              needed) -> {"url": /s3/<key>, "key", "putRequestId"}
  /s3/<key>                                   PUT the graph's bytes; GET them back
  /np/api/graph/save-to-db                    POST {"putRequestId"}: checks the JSON's metadata (slug,
                                              scan: a model id here is any name without "fault") -> {"message", "url"}
  /np/api/graph/{model}/{slug}                GET {"modelId", "slug", "url": /s3/<key>} or 404
  /hf/{org}/{repo}/resolve/{rev}/{path}       HEAD/GET  files under HF_FILES_DIR/{org}/{repo}/{path}
  /hf/api/models/{org}/{repo}/revision/{rev}  GET  the repository: "sha" and "siblings" (every file)
  /hf/api/models/{org}/{repo}/tree/{rev}[/{path}]  GET  a folder's entries (?recursive=true: all below
                                              it), 1000 a page, the next page in a Link header
  /cdn/{org}/{repo}/{path}                    GET  the bytes (Range honoured unless repo says not;
                                              sendfile, so a benchmark can pull tens of GB)
  /stats                                      GET  counters as JSON;  /reset  POST clears them
Requests in absolute form (http://host/path, as sent to a proxy) are answered as their path.
Faults: a Neuronpedia model id "fault-<name>" or a Hugging Face repo "fault/<name>" (see FAULTS).

The served tree is any directory laid out as HF_FILES_DIR/{org}/{repo}/{path in the repository}.
Files ending in .json, .yaml, .yml, .txt, .md, .jinja or named .gitattributes are plain git files
(ETag: git blob SHA-1, bytes from the resolve URL); every other file is an LFS file (ETag: SHA-256,
302 to /cdn/). Hashes are computed once per file (size, mtime and inode unchanged) and, when
$CT_HUB_HASH_CACHE names a file, kept there across runs. Revision "main" is commit COMMIT, a
40-digit commit is itself, any other revision is the SHA-1 of its name; every revision serves the
same files.
"""
import gzip
import hashlib
import json
import os
import socket
import struct
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FIX, FILES = sys.argv[1], sys.argv[2]
# the "huge" fault's 50 MB body and its gzip form, made once: compressing it per request can take
# longer than the client's 1 s limit on a loaded machine, and the case is about size, not time
HUGE = b'{"pad": "' + b"x" * (50 << 20) + b'"}'
HUGE_GZ = gzip.compress(HUGE, 1)
COMMIT = "0123456789abcdef0123456789abcdef01234567"
TREE_PAGE = 1000
lock = threading.RLock()
stats = {}
graphs = {}   # the graph upload flow: "puts" (putRequestId -> key), "blobs" (key -> bytes), "saved" ((scan, slug) -> key)
inflight = {"now": 0, "max": 0}
HASH_FILE = os.environ.get("CT_HUB_HASH_CACHE")
hashes = {}   # (kind, real path) -> (size, mtime_ns, inode, hex digest)
if HASH_FILE and os.path.exists(HASH_FILE):
    with open(HASH_FILE) as f:
        for line in f:
            try:
                k, p, size, mtime, ino, digest = json.loads(line)
                hashes[(k, p)] = (size, mtime, ino, digest)
            except ValueError:
                pass


def file_hash(local, kind):
    """sha256 of a file's bytes, or its git blob sha1 (kind "git"), computed once per version."""
    real = os.path.realpath(local)
    st = os.stat(real)
    ident = (st.st_size, st.st_mtime_ns, st.st_ino)
    with lock:
        known = hashes.get((kind, real))
    if known and known[:3] == ident:
        return known[3]
    h = hashlib.sha1(b"blob %d\0" % st.st_size) if kind == "git" else hashlib.sha256()
    with open(real, "rb") as f:
        for block in iter(lambda: f.read(8 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    with lock:
        hashes[(kind, real)] = ident + (digest,)
        if HASH_FILE:
            with open(HASH_FILE, "a") as f:
                f.write(json.dumps([kind, real, st.st_size, st.st_mtime_ns, st.st_ino, digest]) + "\n")
    return digest


def is_plain(path):
    return path.endswith((".json", ".yaml", ".yml", ".txt", ".md", ".jinja")) or os.path.basename(path) == ".gitattributes"


def commit_of(rev):
    if rev == "main":
        return COMMIT
    if len(rev) == 40 and all(c in "0123456789abcdef" for c in rev):
        return rev
    return hashlib.sha1(rev.encode()).hexdigest()


def repo_files(root, below=""):
    """Every regular file under root/below, as repository paths, sorted."""
    out = []
    for d, dirs, files in os.walk(os.path.join(root, below) if below else root, followlinks=True):
        dirs.sort()
        for f in files:
            p = os.path.join(d, f)
            if os.path.isfile(p):
                out.append(os.path.relpath(p, root).replace(os.sep, "/"))
    return sorted(out)


def count(key, n=1):
    with lock:
        stats[key] = stats.get(key, 0) + n


def fixture(name):
    with open(os.path.join(FIX, name)) as f:
        return json.load(f)


def synth_feature(model, source, index, full):
    """A feature in the server's batch shape (full adds the GET-only fields)."""
    f = {"modelId": model, "layer": source, "index": str(index), "maxActApprox": 1.5 + (int(index) % 7),
         "frac_nonzero": 1e-4 * (1 + int(index) % 13), "pos_str": [" up", " out"], "pos_values": [0.9, 0.4],
         "neg_str": [" down"], "neg_values": [-0.3],
         "explanations": [{"description": "%s feature %s" % (source, index), "explanationModelName": None,
                           "typeName": "np_max-act"}],
         "activations": [{"tokens": ["a", "b"], "values": [0, 1.5], "maxValue": 1.5}]}
    if int(index) % 10 == 3:
        f["explanations"] = []   # no label
    if full:
        f.update({"model": {"id": model}, "source": None, "sourceSet": None, "lists": [], "comments": [],
                  "creator": None})
        for e in f["explanations"]:
            e.update({"id": "x", "scores": [], "triggeredByUser": None})
    return f


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = 1 << 16   # headers and body in one write (no Nagle / delayed-ACK stalls)

    def log_message(self, *a):
        pass

    # ---- helpers ----
    def send(self, status, body, ctype="application/json", headers=None):
        if not isinstance(body, bytes):
            body = json.dumps(body, separators=(",", ":")).encode()
        if "gzip" in (self.headers.get("Accept-Encoding") or "") and ctype.startswith("application/json"):
            body = HUGE_GZ if body is HUGE else gzip.compress(body)
            headers = dict(headers or {}, **{"Content-Encoding": "gzip"})
            count("gzip")
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def reset_connection(self):
        self.wfile.flush()
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True

    def body_json(self):
        n = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(n) or b"null")

    def note_auth(self, area):
        if self.headers.get("x-api-key"):
            count(area + ".x-api-key")
        if self.headers.get("Authorization"):
            count(area + ".authorization")

    # ---- Neuronpedia ----
    def np_fault(self, model):
        """Answers a fault model id; returns True when it did."""
        name = model[len("fault-"):]
        if name == "slow":
            time.sleep(3)
            self.send(200, synth_feature(model, "0-x", 1, True))
        elif name == "ratelimited":   # 429 twice per key, then 200
            key = "rl." + self.path
            count(key)
            if stats[key] <= 2:
                self.send(429, fixture("rate_limited_429.json"))
            else:
                self.send(200, synth_feature(model, "0-x", 1, True))
        elif name == "always429":
            self.send(429, fixture("rate_limited_429.json"))
        elif name == "retryafter":
            self.send(429, fixture("rate_limited_429.json"), headers={"Retry-After": "3600"})
        elif name == "flaky500":
            key = "flaky." + self.path
            count(key)
            if stats[key] <= 1:
                self.send(500, {"error": "Something went wrong on our end. The error has been reported.",
                                "message": "Something went wrong on our end. The error has been reported."})
            else:
                self.send(200, synth_feature(model, "0-x", 1, True))
        elif name == "always500":
            self.send(500, {"message": "Unknown Error"})
        elif name in ("reset", "truncated"):
            body = json.dumps(synth_feature(model, "0-x", 1, True)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            if name == "reset":
                self.reset_connection()
            else:
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_WR)
                self.close_connection = True
        elif name == "badjson":
            self.send(200, b'{"modelId": "x", "explanations": [ {"description": ', "application/json")
        elif name == "notobject":
            self.send(200, b'[1, 2, 3]', "application/json")
        elif name == "huge":
            self.send(200, HUGE, "application/json")
        elif name == "html":
            self.send(200, b"<html><body>maintenance</body></html>", "text/html; charset=utf-8")
        elif name == "gateway":
            self.send(502, b"<html><body>502 Bad Gateway</body></html>", "text/html")
        elif name == "redirectloop":
            self.send(302, b"", "text/plain", headers={"Location": self.path})
        elif name == "nullbody":
            self.send(200, b"null", "application/json")
        elif name == "missingmodel":
            msg = fixture("feature_404.json")["error"]
            self.send(404, {"error": msg, "message": msg})
        else:
            return False
        return True

    def np_get(self, parts):
        count("np.get")
        self.note_auth("np")
        model, source, index = parts
        if model.startswith("fault-") and self.np_fault(model):
            return
        if (model, source, index) == ("gemma-2-2b", "18-gemmascope-transcoder-16k", "7731"):
            return self.send(200, fixture("feature_200.json"))
        if index == "99999" or int(index) >= 1000000:
            return self.send(404, fixture("feature_404.json"))
        self.send(200, synth_feature(model, source, index, True))

    def np_batch(self):
        count("np.batch")
        self.note_auth("np")
        with lock:
            inflight["now"] += 1
            inflight["max"] = max(inflight["max"], inflight["now"])
        try:
            items = self.body_json()
            if not isinstance(items, list):
                return self.send(400, {"message": "body must be an array"})
            if not items:
                return self.send(500, {"message": "Unknown Error"})
            count("np.batch.items", len(items))
            if items[0].get("modelId", "").startswith("fault-") and self.np_fault(items[0]["modelId"]):
                return
            time.sleep(0.05)   # a real server takes a while: lets concurrency show
            out = []
            for it in items:
                if not isinstance(it.get("index"), int) or not isinstance(it.get("layer"), str):
                    return self.send(400, {"message": "index must be an integer"})
                if it["index"] == 99999 or (1000000 <= it["index"] < 4000000000):
                    continue   # missing features are left out
                out.append(synth_feature(it["modelId"], it["layer"], it["index"], False))
            out.reverse()   # order is not guaranteed
            self.send(200, out)
        finally:
            with lock:
                inflight["now"] -= 1

    def np_search(self):
        count("np.search")
        self.note_auth("np")
        req = self.body_json()
        q = req.get("query", "")
        if len(q) < 3:
            return self.send(400, {"message": "query must be at least 3 characters"})
        if q == "limit":
            return self.send(429, fixture("rate_limited_429.json"))
        if q == "river":
            return self.send(200, fixture("search_200.json"))
        total, off = 45, int(req.get("offset") or 0)   # "paged": 45 results in pages of 20
        res = [{"modelId": req["modelId"], "layer": req["layers"][0] if req.get("layers") else "0-x",
                "index": str(i), "description": "%s %d" % (q, i), "explanationModelName": None,
                "typeName": "np_max-act", "cosine_similarity": 1 - i / 100}
               for i in range(off, min(total, off + 20))]
        body = {"request": req, "results": res, "resultsCount": len(res), "hasMore": len(res) == 20}
        if len(res) == 20:
            body["nextOffset"] = off + 20
        self.send(200, body)

    # ---- Hugging Face ----
    def hf_missing_repo(self, org, repo):
        if os.path.isdir(os.path.join(FILES, org, repo)):
            return False
        self.send(401, {"error": "Repository Not Found"}, headers={"X-Error-Code": "RepoNotFound"})
        return True

    def hf_revision(self, org, repo, rev):
        """The repository's description, as GET /api/models/{repo}/revision/{rev} answers it."""
        count("hf.api.revision")
        self.note_auth("hf")
        if self.hf_missing_repo(org, repo):
            return
        root = os.path.join(FILES, org, repo)
        rid = "%s/%s" % (org, repo)
        self.send(200, {"_id": hashlib.sha1(rid.encode()).hexdigest()[:24], "id": rid, "modelId": rid, "author": org,
                        "sha": commit_of(rev), "lastModified": "2025-01-01T00:00:00.000Z", "private": False,
                        "disabled": False, "gated": False, "downloads": 0, "likes": 0, "tags": [],
                        "siblings": [{"rfilename": p} for p in repo_files(root)],
                        "createdAt": "2025-01-01T00:00:00.000Z"})

    def hf_tree(self, org, repo, rev, path, query):
        """A folder's entries, as GET /api/models/{repo}/tree/{rev}[/{path}] answers them, in pages."""
        count("hf.api.tree")
        self.note_auth("hf")
        if self.hf_missing_repo(org, repo):
            return
        root = os.path.join(FILES, org, repo)
        target = os.path.join(root, path) if path else root
        if not os.path.isdir(target):
            return self.send(404, {"error": "Entry not found"}, headers={"X-Error-Code": "EntryNotFound"})
        q = urllib.parse.parse_qs(query)
        recursive = q.get("recursive", ["false"])[0].lower() == "true"
        cursor = int(q.get("cursor", ["0"])[0])
        if recursive:
            names = []
            for d, dirs, files in os.walk(target, followlinks=True):
                names += [os.path.relpath(os.path.join(d, n), root).replace(os.sep, "/") for n in dirs + files]
            names.sort()
        else:
            names = sorted(((path + "/") if path else "") + n for n in os.listdir(target))
        page = []
        for p in names[cursor:cursor + TREE_PAGE]:
            local = os.path.join(root, p)
            if os.path.isdir(local):
                page.append({"type": "directory", "oid": hashlib.sha1(p.encode()).hexdigest(), "size": 0, "path": p})
                continue
            e = {"type": "file", "size": os.path.getsize(local), "path": p}
            if is_plain(p):
                e["oid"] = file_hash(local, "git")
            else:   # (the blob id of the LFS pointer and the lfs oid are left out: ctrace reads neither)
                e["lfs"] = {"size": e["size"], "pointerSize": 134}
            page.append(e)
        headers = {}
        if cursor + TREE_PAGE < len(names):
            nxt = "http://%s/hf/api/models/%s/%s/tree/%s%s?%s" % (
                self.headers["Host"], org, repo, urllib.parse.quote(rev, safe=""),
                ("/" + urllib.parse.quote(path, safe="")) if path else "",
                urllib.parse.urlencode({"recursive": str(recursive).lower(), "expand": "false", "cursor": cursor + TREE_PAGE}))
            headers["Link"] = '<%s>; rel="next"' % nxt
        self.send(200, page, headers=headers)

    def hf_resolve(self, org, repo, rev, path):
        count("hf.resolve")
        self.note_auth("hf")
        local = os.path.join(FILES, org, repo, path)
        if self.hf_missing_repo(org, repo):
            return
        if not os.path.isfile(local):
            return self.send(404, {"error": "Entry not found"}, headers={"X-Error-Code": "EntryNotFound"})
        commit = commit_of(rev)
        if is_plain(path):   # a plain git file: ETag is the git blob sha1
            etag = file_hash(local, "git")
            if org == "fault" and repo == "wrongsha":
                etag = "f" * 40
            size = os.path.getsize(local)
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(size))
            self.send_header("ETag", '"%s"' % etag)
            self.send_header("X-Repo-Commit", commit)
            self.end_headers()
            if self.command != "HEAD":
                with open(local, "rb") as f:
                    self.wfile.write(f.read())
            return
        sha = "0" * 64 if org == "fault" and repo == "wrongsha" else file_hash(local, "sha256")
        self.send_response(302)
        # an absolute address, as the real CDN is another server
        self.send_header("Location", "http://%s/cdn/%s/%s/%s?sig=1" % (self.headers["Host"], org, repo,
                                                                      urllib.parse.quote(path)))
        self.send_header("X-Linked-Etag", '"%s"' % sha)
        self.send_header("X-Linked-Size", str(os.path.getsize(local)))
        self.send_header("X-Repo-Commit", commit)
        self.send_header("ETag", '"abc"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def cdn(self, org, repo, path):
        count("cdn.get")
        self.note_auth("cdn")
        local = os.path.join(FILES, org, repo, urllib.parse.unquote(path.split("?")[0]))
        size = os.path.getsize(local)
        start, end = 0, size - 1
        rng = self.headers.get("Range")
        if rng:
            count("cdn.range")
            with lock:
                stats["cdn.range_start"] = int(rng.split("=")[1].split("-")[0] or 0)
        if rng and repo != "norange":
            a, b = rng.split("=", 1)[1].split(",")[0].strip().split("-")
            if a == "":
                start = max(0, size - int(b))
            else:
                start, end = int(a), min(size - 1, int(b)) if b else size - 1
            if start >= size or start > end:
                self.send_response(416)
                self.send_header("Content-Range", "bytes */%d" % size)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, end, size))
        else:
            self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        if repo in ("slow", "cut"):
            with open(local, "rb") as f:
                f.seek(start)
                body = f.read(end - start + 1)
            if repo == "slow":   # about 2 MB/s, for interrupting a download half-way
                for i in range(0, len(body), 65536):
                    self.wfile.write(body[i:i + 65536])
                    self.wfile.flush()
                    time.sleep(0.03)
            elif start == 0:   # "cut": the first attempt dies half-way
                self.wfile.write(body[: len(body) // 2])
                self.reset_connection()
            else:
                self.wfile.write(body)
            return
        self.wfile.flush()
        with open(local, "rb") as f:   # the kernel copies: no Python loop over the bytes
            self.connection.sendfile(f, start, end - start + 1)

    # ---- dispatch ----
    # ---- Neuronpedia graphs: the upload flow and published graphs ----
    def np_signed_put(self):
        count("np.signed_put")
        if not self.headers.get("x-api-key"):
            return self.send(401, {"error": "API key required"})
        b = self.body_json()
        if not isinstance(b, dict):
            return self.send(400, {"error": "Invalid request body"})
        name, n = b.get("filename", ""), b.get("contentLength", 0)
        if not name.endswith(".json"):
            return self.send(400, {"error": "Filename must end in .json"})
        if not (1024 <= n <= 100 << 20):
            return self.send(400, {"error": "Content length must be between 1 KB and 100 MB"})
        with lock:
            count("np.put_ids")
            pid = "put-%d" % stats["np.put_ids"]
            graphs.setdefault("puts", {})[pid] = {"key": pid + "/" + name, "length": n}
        self.send(200, {"url": "http://%s/s3/%s/%s" % (self.headers.get("Host"), pid, name), "key": pid + "/" + name,
                        "putRequestId": pid})

    def s3(self, key):
        self.note_auth("s3")   # the storage host must never see the API key
        if self.command == "PUT":
            n = int(self.headers.get("Content-Length") or 0)
            with lock:
                graphs.setdefault("blobs", {})[key] = self.rfile.read(n)
            return self.send(200, b"", "text/plain")
        blob = graphs.get("blobs", {}).get(key)
        if blob is None:
            return self.send(404, b"<Error>NoSuchKey</Error>", "application/xml")
        self.send(200, blob, "application/json")

    def np_save(self):
        count("np.save_to_db")
        if not self.headers.get("x-api-key"):
            return self.send(401, {"error": "API key required"})
        b = self.body_json()
        put = graphs.get("puts", {}).get(b.get("putRequestId") if isinstance(b, dict) else None)
        blob = put and graphs.get("blobs", {}).get(put["key"])
        if blob is None:
            return self.send(400, {"error": "No upload found for this putRequestId"})
        if len(blob) != put["length"]:
            return self.send(400, {"error": "Uploaded size differs from contentLength"})
        try:
            g = json.loads(blob)
            meta = g["metadata"]
            slug, scan = meta["slug"], meta["scan"]
            assert isinstance(g["nodes"], list) and isinstance(g["links"], list)
        except (ValueError, KeyError, TypeError, AssertionError):
            return self.send(400, {"error": "Invalid graph JSON", "details": ["metadata.slug, metadata.scan, nodes, links: required"]})
        ok = lambda x: isinstance(x, str) and x and all(c.isalnum() or c in "_-" for c in x)   # Neuronpedia's rule
        if not ok(slug) or not ok(scan):
            return self.send(400, {"error": "Invalid slug or scan"})
        if "fault" in scan:
            return self.send(400, {"error": "ERR_MODEL_DOES_NOT_EXIST"})
        with lock:
            graphs.setdefault("saved", {})[(scan, slug)] = put["key"]
        self.send(200, {"message": "Graph saved to database",
                        "url": "https://www.neuronpedia.org/%s/graph?slug=%s" % (scan, slug)})

    def np_graph_get(self, model, slug):
        count("np.graph_get")
        key = graphs.get("saved", {}).get((model, slug))
        if key is None:
            return self.send(404, {"error": "Graph not found"})
        self.send(200, {"modelId": model, "slug": slug, "url": "http://%s/s3/%s" % (self.headers.get("Host"), key)})

    def route(self):
        if self.path.startswith("http://"):   # absolute form: we are someone's proxy
            count("proxied")
            self.path = "/" + self.path.split("/", 3)[3]
        p = self.path.split("?")[0]
        parts = p.strip("/").split("/")
        try:
            if p == "/stats":
                with lock:
                    return self.send(200, dict(stats, max_inflight=inflight["max"]))
            if p == "/reset" and self.command == "POST":
                with lock:
                    stats.clear()
                    inflight["max"] = 0
                return self.send(200, {})
            if parts[:3] == ["np", "api", "feature"] and len(parts) == 6 and self.command == "GET":
                return self.np_get(parts[3:])
            if parts[:3] == ["np", "api", "features"] and self.command == "POST":
                return self.np_batch()
            if parts[:4] == ["np", "api", "explanation", "search"] and self.command == "POST":
                return self.np_search()
            if parts[:4] == ["np", "api", "graph", "signed-put"] and self.command == "POST":
                return self.np_signed_put()
            if parts[:4] == ["np", "api", "graph", "save-to-db"] and self.command == "POST":
                return self.np_save()
            if parts[:3] == ["np", "api", "graph"] and len(parts) == 5 and self.command == "GET":
                return self.np_graph_get(urllib.parse.unquote(parts[3]), urllib.parse.unquote(parts[4]))
            if parts[0] == "s3" and len(parts) >= 2 and self.command in ("PUT", "GET"):
                return self.s3("/".join(parts[1:]))
            q = self.path.split("?", 1)[1] if "?" in self.path else ""
            dec = [urllib.parse.unquote(x) for x in parts]
            if any(x in ("..", ".") or "/.." in x or "../" in x for x in dec) and parts[0] in ("hf", "cdn"):
                return self.send(400, {"error": "no '..' here"})
            if parts[:3] == ["hf", "api", "models"] and len(parts) == 7 and parts[5] == "revision":
                return self.hf_revision(dec[3], dec[4], dec[6])
            if parts[:3] == ["hf", "api", "models"] and len(parts) >= 7 and parts[5] == "tree":
                return self.hf_tree(dec[3], dec[4], dec[6], "/".join(dec[7:]), q)
            if parts[0] == "hf" and len(parts) >= 6 and parts[3] == "resolve":
                return self.hf_resolve(dec[1], dec[2], dec[4], "/".join(dec[5:]))
            if parts[0] == "cdn" and len(parts) >= 4:
                return self.cdn(parts[1], parts[2], "/".join(parts[3:]))
            self.send(404, {"error": "no route " + p})
        except (BrokenPipeError, ConnectionResetError):
            pass

    do_GET = do_POST = do_HEAD = do_PUT = route


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128   # the default 5 drops SYNs of concurrent clients (1 s retransmits)
    allow_reuse_address = True


srv = Server(("127.0.0.1", 0), Handler)
print("PORT %d" % srv.server_address[1], flush=True)
srv.serve_forever()
