#!/usr/bin/python3
"""readme_walk.py README WORK - a newcomer's walk through README.md: every shell command of its
```sh blocks and every ```lua example, run as written from WORK (a directory laid out as the
repository, with ../shared beside it), in the README's order. TAP on stdout.

A command must exit 0 unless the README says otherwise. Where the README writes a synopsis rather
than a command (`script.lua args...`, `'code'`), this file says what stands in for it (SYNOPSIS);
commands that serve until Ctrl-C are started, asked for a page, and interrupted (SERVES). A Lua
example that continues an earlier one (the README says so above it) runs after it in one chunk
(CONTINUES); CHECKS adds assertions after an example, so an example that returns nil and a message
fails here. An example or command this file does not know runs as written: a new one is covered
the day it is written.
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request

readme, work = sys.argv[1], sys.argv[2]
n = 0
failed = 0
last = time.time()


def ok(cond, what, detail=""):
    global n, failed, last
    n += 1
    print(("ok %d - %s" if cond else "not ok %d - %s") % (n, what))
    print("# %.1f s" % (time.time() - last))
    last = time.time()
    if not cond:
        failed += 1
        for line in detail.splitlines()[-25:]:
            print("#   " + line)
    sys.stdout.flush()


def skip(what, why):
    global n
    n += 1
    print("ok %d - %s # SKIP %s" % (n, what, why))


def blocks(path):
    """[(lang, first line number, [lines])] of the fenced blocks with a language."""
    out, cur = [], None
    for i, line in enumerate(open(path, encoding="utf-8"), 1):
        line = line.rstrip("\n")
        if re.match(r"\s+```|~~~", line):
            ok(False, "README line %d: a fence this walk does not read (indented, or ~~~)" % i)
        if line.startswith("```"):
            if cur is None:
                cur = (line[3:].strip(), i + 1, [])
            else:
                if cur[0]:
                    out.append(cur)
                cur = None
        elif cur is not None:
            cur[2].append(line)
    if cur is not None:
        ok(False, "README line %d: a block never closed" % (cur[1] - 1))
    return out


def run(cmd, timeout=600):
    p = subprocess.Popen(["bash", "-c", cmd], cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        err += b"\n(killed after %d s)" % timeout
    return p.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


# ---- shell commands ----
SKIP = {"make check": "this walk runs inside make check (CI runs it on every change)"}
# what would run the suite, and this walk, inside itself
RECURSIVE = re.compile(r"^make\b.*\b(check|test|asan)\b|tests/run_all\.sh|test_readme\.sh")

# synopsis as written -> (command run in its place, what its output must hold)
SYNOPSIS = {
    "build/ctrace script.lua args...": ("printf 'print(arg[0], ...)\\n' > script.lua && build/ctrace script.lua one two",
                                        "script.lua\tone\ttwo"),
    "build/ctrace -e 'code'": ("build/ctrace -e 'x = 6 * 7' -e 'print(x)'", "42"),
    "build/ctrace": ("printf 'x = 6 * 7\\nx\\n' | build/ctrace", "42"),
}


def files_exist(*paths):
    return lambda: [p for p in paths if not os.path.isfile(os.path.join(work, p))]


# after a command, the files it must have written
WRITES = {
    "make run": files_exist("experiments/stories260K-lily-she/results/report.md",
                            "experiments/stories260K-lily-she/results/manifest.json"),
    "build/ctrace run experiments/stories260K-lily-she": files_exist(
        "experiments/stories260K-lily-she/results/manifest.json"),
    "build/ctrace new my-study": files_exist("experiments/my-study/experiment.lua"),
    "build/ctrace attribute -p \"Once upon a time\" -o graph.pt": files_exist("graph.pt"),
    "build/ctrace convert graph.pt graph.safetensors": files_exist("graph.safetensors"),
    "make MPI=1": files_exist("build/mpi/ctrace"),
    "mpirun -n 2 build/mpi/ctrace attribute --prompts prompts.txt --graph_file_dir many": files_exist(
        "many/1-once-upon-a-time.json", "many/3-tom-was-sad.html", "many/graph-metadata.json"),
    "mpirun -n 2 build/mpi/ctrace attribute -p \"Once upon a time\" -o graph-mpi.pt": files_exist("graph-mpi.pt"),
    "mpirun -n 2 build/mpi/ctrace attribute -p \"Once upon a time\" --split-layers -o split/graph-mpi.pt": files_exist(
        "split/graph-mpi.pt"),
    "build/ctrace convert graph.pt graphs/lily.json": files_exist("graphs/lily.json", "graphs/lily.html",
                                                                  "graphs/graph-metadata.json"),
}


def port_busy(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def serves(cmd, page):
    """Runs cmd until http://127.0.0.1:8041/ answers, fetches page, then Ctrl-C (SIGINT to its group)."""
    p = subprocess.Popen(["bash", "-c", "exec " + cmd], cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, start_new_session=True)
    body, t0 = None, time.time()
    while body is None and time.time() - t0 < 120 and p.poll() is None:
        try:
            body = urllib.request.urlopen("http://127.0.0.1:8041/" + page, timeout=5).read()
        except OSError:
            time.sleep(0.2)
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGINT)
    try:
        out = p.communicate(timeout=10)[0]
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out = p.communicate()[0] + "\n(still running 10 s after Ctrl-C)"
    return body, p.returncode, out


# commands that serve until Ctrl-C -> the page they must serve
SERVES = {"--server": "once.json", "build/ctrace serve graphs": "once.html"}


used = set()   # the keys of the tables above and below that met their README text


def shell(cmd):
    for table in (SKIP, SYNOPSIS, WRITES, SERVES):
        used.update(k for k in table if k == cmd or (table is SERVES and k in cmd))
    if cmd in SKIP:
        return skip(cmd, SKIP[cmd])
    if (cmd.startswith("mpirun") or "MPI=1" in cmd) and not shutil.which("mpirun"):
        return skip(cmd, "no Open MPI here (tests/setup.sh test installs it)")
    if RECURSIVE.search(cmd):
        return ok(False, "%s: would run the suite inside itself; add it to SKIP with the reason" % cmd)
    if cmd in SYNOPSIS:
        real, want = SYNOPSIS[cmd]
        rc, out, err = run(real)
        return ok(rc == 0 and want in out, "%s (as: %s)" % (cmd, real), out + err)
    page = next((v for k, v in SERVES.items() if k in cmd), None)
    if page and port_busy(8041):
        return skip(cmd, "port 8041 is busy on this machine (the suite's own network namespace keeps it free)")
    if page:
        body, rc, out = serves(cmd, page)
        # Ctrl-C ends a server: 130, as every command interrupted (README, exit statuses)
        return ok(body is not None and rc == 130, "%s: serves %s, exits 130 on Ctrl-C" % (cmd, page),
                  "exit %s\n%s" % (rc, out))
    rc, out, err = run(cmd)
    missing = WRITES[cmd]() if cmd in WRITES and rc == 0 else []
    ok(rc == 0 and not missing, cmd + (" (writes %s)" % ", ".join(missing) if missing else ""),
       "exit %d\n%s%s" % (rc, out, err))


def commands(lines, first):
    for i, line in enumerate(lines):
        if not line.strip() or re.match(r"\s+#", line):   # an indented comment continues the one above
            continue
        cmd = re.split(r"\s{2,}#", line)[0].strip()
        if line.startswith(" ") or cmd.endswith("\\"):
            ok(False, "README line %d: a command indented or continued on the next line, which this walk "
               "would not run whole: %s" % (first + i, line.strip()))
            continue
        yield cmd


# ---- Lua examples ----
# first line of an example -> first line of the example it continues
CONTINUES = {
    "local top = g:prune{}:top_features{n = 3}": "local ct = require \"ctrace\"\nlocal m = ct.load_model(\"stories260K\")\nlocal tc",
}

# first line of an example -> Lua run after it (the example's results must be real)
CHECKS = {
    "local ct = require \"ctrace\"\nlocal f, msg, code": """
assert(f and f.label, msg)
assert(list and #list == 2 and list[1].label, errors)
assert(hits and #hits.results == 45, "three pages of search results")
assert(path and io.open(path), "hub.file")
assert(dir and #files > 0 and commit, "hub.snapshot")
assert(m:config().architecture == "Gemma2ForCausalLM")
assert(page == "https://www.neuronpedia.org/gemma-2-2b/graph?slug=dallas", page)
assert(#g2:nodes() > 0 and g2:prompt() == g:prompt())
""",
    "local ct = require \"ctrace\"\nlocal m = ct.load_model(\"google/gemma-3-1b-it\")": "assert(#g:nodes() > 0 and rm:constant_positions() == 4)",
    "local top = g:prune{}:top_features{n = 3}": "assert(#top == 3 and r:prob(r:top_logits(1)[1].id) > 0)",
    "local ct = require \"ctrace\"\nlocal model": """
assert(clt and #feats > 0 and #errs == tc.n_layers and r.n_tokens > 0)
assert(io.open("out/config.yaml"), "train_transcoders wrote out/config.yaml")
""",
    "local ct = require \"ctrace\"\nlocal m = ct.load_model(\"stories260K\")\nlocal tc": """
assert(io.open("results/lily-she.json") and io.open("results/lily-she.safetensors"))
""",
}

# files a newcomer writes by hand before an example
HAND_WRITTEN = {"labels.json": '{"1_2": "a label written by hand"}\n'}


def keyed(table, text):
    k = next((k for k in table if text.startswith(k)), None)
    if k is not None:
        used.add(k)
    return table.get(k)


def lua(text, line, all_lua):
    parts, cur = [text], text
    while keyed(CONTINUES, cur):
        first = keyed(CONTINUES, cur)
        cur = next(t for t in all_lua if t.startswith(first))
        parts.insert(0, cur)
    check = keyed(CHECKS, text) or ""
    expect = [m.group(1).replace("\\n", "\n") for m in re.finditer(r"^--> (.*)$", text, re.M)]
    for name, body in HAND_WRITTEN.items():
        if name in text:
            open(os.path.join(work, name), "w").write(body)
    path = os.path.join(work, "example_%d.lua" % line)
    open(path, "w").write("\n".join(parts) + "\n" + check)
    rc, out, err = run("build/ctrace " + os.path.basename(path))
    missing = [e for e in expect if e not in out]
    first = text.splitlines()[0]
    ok(rc == 0 and not missing, "README line %d: the Lua example (%s%s)" %
       (line, first[:60], ", continuing an earlier one" if len(parts) > 1 else ""),
       "exit %d\n%s%s%s" % (rc, out, err, "".join("\nmissing output: " + e for e in missing)))


def main():
    bs = blocks(readme)
    all_lua = ["\n".join(b[2]) for b in bs if b[0] == "lua"]
    for lang, line, body in bs:
        if lang == "sh":
            for cmd in commands(body, line):
                shell(cmd)
        elif lang == "lua":
            lua("\n".join(body), line, all_lua)
        else:
            ok(False, "README line %d: a block in %s, which this walk cannot run" % (line, lang))
    for table in (SKIP, SYNOPSIS, WRITES, SERVES, CONTINUES, CHECKS):
        for k in table:
            ok(k in used, "this walk's entry %r still names README text" % k.replace("\n", " / ")[:90])
    for k in CONTINUES.values():   # the examples continued
        ok(any(t.startswith(k) for t in all_lua), "the example continued, %r, is in the README" % k.splitlines()[-1])
    print("1..%d" % n)
    sys.exit(1 if failed else 0)


main()
