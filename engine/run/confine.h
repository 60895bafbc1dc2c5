// confine.h - what the kernel lets an experiment process do: Landlock (files and network),
// seccomp (system calls), resource limits, no privileges. Applied once, by the process to itself,
// for good: nothing it runs afterwards can lift it.
//
//   ct_isolation iso;
//   ct_confine_probe(&iso);                       // what this kernel offers
//   ct_confine_policy p = {.read = roots, .n_read = 3, .write = staging, .memory = 8 << 30};
//   if (ct_confine(&p, &iso, &err)) ...           // iso: what is now in force
//
// Files: reads only below p.read (and p.write), writes only below p.write, no execution, no
// links, devices, FIFOs or sockets made, no rename across directories. Network (Landlock ABI 4
// and up): no TCP bind or connect. Signals and abstract sockets (ABI 6 and up): only within the
// process. System calls refused with EPERM: execve/execveat, ptrace and process_vm_*, any clone
// that is not a thread, namespaces and mounts, chmod/chown/utimes/xattrs and links by path,
// socket, setsid/setpgid, TIOCSTI, kernel keyrings, bpf, perf, modules, io_uring and the like
// (the list is in confine.c).
// Limits: no core dumps, memory (RLIMIT_DATA: what the process may allocate; mapped model files
// do not count), file size (RLIMIT_FSIZE), open files. Capabilities are dropped and
// no_new_privs set.
#ifndef CT_RUN_CONFINE_H
#define CT_RUN_CONFINE_H
#include <stdint.h>
#include "core/status.h"

typedef struct {
    const char *const *read;   // (n_read,) directories or files that may be read
    int n_read;
    const char *write;         // the one directory that may be written (and read)
    int64_t memory;            // RLIMIT_DATA bytes; 0: unchanged
    int64_t file_size;         // RLIMIT_FSIZE bytes; 0: unchanged
} ct_confine_policy;

typedef struct {
    int landlock_abi;   // 0: no Landlock
    int seccomp;        // a seccomp filter can be (or is) installed
    int net;            // Landlock refuses TCP bind and connect
    int scoped;         // Landlock confines signals and abstract UNIX sockets to the process
    int64_t memory, file_size;   // the limits in force (0: none set)
} ct_isolation;

// What the kernel offers (a probe; nothing changes).
void ct_confine_probe(ct_isolation *iso);
// Confines the calling process (all its threads must be started after, or be OpenBLAS's, which
// inherit nothing they need). UNSUPPORTED when Landlock or seccomp is missing; SYSTEM when a step
// fails (the process is then partly confined and should exit).
ct_status ct_confine(const ct_confine_policy *p, ct_isolation *iso, ct_err *err);

#endif
