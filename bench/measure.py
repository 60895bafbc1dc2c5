#!/usr/bin/env python3
"""Runs one command and prints what it cost: wall time, peak RSS, peak anonymous memory, bytes
read from disk, major page faults, and, with --mem, the same inside a memory cgroup of that size
(page cache counts against it, as on a laptop with that much RAM).

    bench/measure.py [--mem GIB] [--label TEXT] [--drop-caches] [--runs N] -- COMMAND ARGS...

Prints one line "measure: label wall_s=... peak_rss_gib=... peak_anon_gib=... read_gb=...
majflt=... cgroup_gib=... cgroup_peak_gib=... rc=..." after the command's own output, and exits
with the command's status. --runs N runs the command N times in the same cgroup, one line each
("label, run i of N"; stops at the first failure): the last is the steady state, with the page
cache the cgroup's limit lets it keep. A page already cached when the cgroup is made stays
charged to whoever read it first (cgroup v1 and v2 alike), so --mem without --drop-caches
understates what the run needs. Peaks are sampled every 20 ms from /proc (the kernel's own VmHWM for
RSS); anonymous memory has no kernel high-water mark, so its peak is the largest sample.
cgroup v1 (memory.limit_in_bytes) and v2 (memory.max) are both handled; without a writable
memory controller --mem is refused. Needs root for cgroups and --drop-caches. Figures only.
"""
import argparse
import os
import subprocess
import sys
import time


def cgroup_create(gib):
    limit = int(gib * (1 << 30))
    name = "ctrace-measure-%d" % os.getpid()
    v1 = "/sys/fs/cgroup/memory"
    if os.path.isfile(os.path.join(v1, "memory.limit_in_bytes")):
        d = os.path.join(v1, name)
        os.mkdir(d)
        with open(os.path.join(d, "memory.limit_in_bytes"), "w") as f:
            f.write(str(limit))
        # no swap on these machines; set the combined limit too where it exists
        sw = os.path.join(d, "memory.memsw.limit_in_bytes")
        if os.path.exists(sw):
            try:
                with open(sw, "w") as f:
                    f.write(str(limit))
            except OSError:
                pass
        return d, "v1"
    for root in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup"):
        ctl = os.path.join(root, "cgroup.controllers")
        if os.path.isfile(ctl) and "memory" in open(ctl).read().split():
            d = os.path.join(root, name)
            os.mkdir(d)
            with open(os.path.join(d, "memory.max"), "w") as f:
                f.write(str(limit))
            return d, "v2"
    sys.exit("measure: no writable memory cgroup controller here; run without --mem")


def cgroup_peak(d, kind):
    f = "memory.max_usage_in_bytes" if kind == "v1" else "memory.peak"
    try:
        return int(open(os.path.join(d, f)).read())
    except OSError:
        return 0


def status_kib(pid, key):
    try:
        for line in open("/proc/%d/status" % pid):
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def io_read_bytes(pid):
    try:
        for line in open("/proc/%d/io" % pid):
            if line.startswith("read_bytes:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mem", type=float, default=0)
    ap.add_argument("--label", default="")
    ap.add_argument("--drop-caches", action="store_true")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd and a.cmd[0] == "--" else a.cmd
    if not cmd:
        sys.exit("usage: measure.py [--mem GIB] [--label TEXT] [--drop-caches] [--runs N] -- COMMAND ARGS...")
    if a.drop_caches:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    cg = kind = None
    if a.mem > 0:
        cg, kind = cgroup_create(a.mem)
    for i in range(a.runs):
        label = a.label or os.path.basename(cmd[0])
        if a.runs > 1:
            label += ", run %d of %d" % (i + 1, a.runs)
        rc = run_once(cmd, cg, kind, a.mem, label)
        if rc != 0:
            break
    if cg:
        try:
            os.rmdir(cg)
        except OSError:
            pass
    sys.exit(rc if rc >= 0 else 128 - rc)


def run_once(cmd, cg, kind, mem, label):
    t0 = time.monotonic()
    # the child joins the cgroup before it runs anything
    pre = None
    if cg:
        procs = os.path.join(cg, "cgroup.procs")
        pre = lambda: open(procs, "w").write(str(os.getpid()))  # noqa: E731
        reset = os.path.join(cg, "memory.max_usage_in_bytes")
        if kind == "v1" and os.path.exists(reset):
            open(reset, "w").write("0")
    p = subprocess.Popen(cmd, preexec_fn=pre)
    peak_anon = hwm = read_b = majflt = 0
    while p.poll() is None:
        anon = status_kib(p.pid, "RssAnon")
        h = status_kib(p.pid, "VmHWM")
        r = io_read_bytes(p.pid)
        if anon is not None:
            peak_anon = max(peak_anon, anon)
        if h is not None:
            hwm = max(hwm, h)
        if r is not None:
            read_b = max(read_b, r)
        try:
            majflt = max(majflt, int(open("/proc/%d/stat" % p.pid).read().rsplit(")", 1)[1].split()[9]))
        except (OSError, IndexError, ValueError):
            pass
        time.sleep(0.02)
    wall = time.monotonic() - t0
    rc = p.returncode
    peak = cgroup_peak(cg, kind) if cg else 0
    gib = 1 << 30
    print("measure: %s wall_s=%.2f peak_rss_gib=%.2f peak_anon_gib=%.2f read_gb=%.2f majflt=%d cgroup_gib=%s "
          "cgroup_peak_gib=%.2f rc=%d" % (label, wall, hwm * 1024 / gib, peak_anon * 1024 / gib, read_b / 1e9, majflt,
                                          ("%g" % mem) if cg else "-", peak / gib, rc), flush=True)
    return rc


if __name__ == "__main__":
    main()
