// confine.c - Landlock, seccomp, limits and privileges of an experiment process (confine.h).
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/landlock.h>
#include <sched.h>
#include <seccomp.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "run/confine.h"

// Landlock rights by ABI (the kernel's uapi; Debian's headers stop at ABI 2)
#define LL_FS_EXECUTE (1ULL << 0)
#define LL_FS_WRITE_FILE (1ULL << 1)
#define LL_FS_READ_FILE (1ULL << 2)
#define LL_FS_READ_DIR (1ULL << 3)
#define LL_FS_REMOVE_DIR (1ULL << 4)
#define LL_FS_REMOVE_FILE (1ULL << 5)
#define LL_FS_MAKE_DIR (1ULL << 7)
#define LL_FS_MAKE_REG (1ULL << 8)
#define LL_FS_ABI1 ((1ULL << 13) - 1)   // execute .. make_sym
#define LL_FS_REFER (1ULL << 13)        // ABI 2
#define LL_FS_TRUNCATE (1ULL << 14)     // ABI 3
#define LL_FS_IOCTL_DEV (1ULL << 15)    // ABI 5
#define LL_NET_BIND_TCP (1ULL << 0)     // ABI 4
#define LL_NET_CONNECT_TCP (1ULL << 1)
#define LL_SCOPE_ABSTRACT_UNIX (1ULL << 0)   // ABI 6
#define LL_SCOPE_SIGNAL (1ULL << 1)

struct ll_ruleset_attr {   // grows with the ABI: the size passed says which fields exist
    uint64_t handled_access_fs, handled_access_net, scoped;
};
struct ll_path_beneath {
    uint64_t allowed_access;
    int32_t parent_fd;
} __attribute__((packed));

static int landlock_abi(void) {
    long abi = syscall(SYS_landlock_create_ruleset, NULL, 0, LANDLOCK_CREATE_RULESET_VERSION);
    return abi < 0 ? 0 : (int)abi;
}

void ct_confine_probe(ct_isolation *iso) {
    memset(iso, 0, sizeof *iso);
    iso->landlock_abi = landlock_abi();
    iso->net = iso->landlock_abi >= 4;
    iso->scoped = iso->landlock_abi >= 6;
    // seccomp filters exist when the kernel reports a mode for this process
    iso->seccomp = prctl(PR_GET_SECCOMP, 0, 0, 0, 0) >= 0;
}

static ct_status add_path(int ruleset, const char *path, uint64_t access, uint64_t handled, ct_err *err) {
    int fd = open(path, O_PATH | O_CLOEXEC);
    if (fd < 0) return ct_fail(err, CT_STATUS_NOT_FOUND, "sandbox: %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) == 0 && !S_ISDIR(st.st_mode))   // a file: only the rights files have
        access &= LL_FS_EXECUTE | LL_FS_WRITE_FILE | LL_FS_READ_FILE | LL_FS_TRUNCATE | LL_FS_IOCTL_DEV;
    struct ll_path_beneath pb = {access & handled, fd};
    long rc = syscall(SYS_landlock_add_rule, ruleset, LANDLOCK_RULE_PATH_BENEATH, &pb, 0);
    int e = errno;
    close(fd);
    if (rc) return ct_fail(err, CT_STATUS_SYSTEM, "sandbox: Landlock rule for %s: %s", path, strerror(e));
    return CT_OK;
}

static ct_status apply_landlock(const ct_confine_policy *p, int abi, ct_err *err) {
    uint64_t fs = LL_FS_ABI1;
    if (abi >= 2) fs |= LL_FS_REFER;
    if (abi >= 3) fs |= LL_FS_TRUNCATE;
    if (abi >= 5) fs |= LL_FS_IOCTL_DEV;
    struct ll_ruleset_attr attr = {fs, abi >= 4 ? LL_NET_BIND_TCP | LL_NET_CONNECT_TCP : 0,
                                   abi >= 6 ? LL_SCOPE_ABSTRACT_UNIX | LL_SCOPE_SIGNAL : 0};
    size_t size = abi >= 6 ? 24 : abi >= 4 ? 16 : 8;
    int rs = (int)syscall(SYS_landlock_create_ruleset, &attr, size, 0);
    if (rs < 0) return ct_fail(err, CT_STATUS_SYSTEM, "sandbox: Landlock ruleset: %s", strerror(errno));
    const uint64_t rd = LL_FS_READ_FILE | LL_FS_READ_DIR;
    const uint64_t wr = rd | LL_FS_WRITE_FILE | LL_FS_REMOVE_DIR | LL_FS_REMOVE_FILE | LL_FS_MAKE_DIR | LL_FS_MAKE_REG |
                        LL_FS_TRUNCATE;
    ct_status rc = CT_OK;
    for (int i = 0; i < p->n_read && !rc; i++) rc = add_path(rs, p->read[i], rd, fs, err);
    if (!rc && p->write) rc = add_path(rs, p->write, wr, fs, err);
#ifdef __SANITIZE_ADDRESS__
    // the sanitizers read /proc/self/maps to report (and LeakSanitizer at exit)
    char self[64];
    snprintf(self, sizeof self, "/proc/%d", (int)getpid());
    if (!rc) rc = add_path(rs, self, rd, fs, err);
#endif
    if (!rc && syscall(SYS_landlock_restrict_self, rs, 0))
        rc = ct_fail(err, CT_STATUS_SYSTEM, "sandbox: Landlock: %s", strerror(errno));
    close(rs);
    return rc;
}

// System calls an experiment never needs; each fails with EPERM (clone3 with ENOSYS, so that
// thread creation falls back to clone, whose flags the filter can read).
static const char *const denied[] = {
    "execve", "execveat",
#ifndef __SANITIZE_ADDRESS__   // LeakSanitizer stops the world with a clone and ptrace
    "ptrace",
#endif
    "process_vm_readv", "process_vm_writev", "fork", "vfork", "unshare", "setns",
    "mount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "fsopen", "fsmount", "fsconfig", "fspick",
    "mount_setattr", "bpf", "perf_event_open", "keyctl", "add_key", "request_key", "userfaultfd", "kexec_load",
    "kexec_file_load", "init_module", "finit_module", "delete_module", "reboot", "swapon", "swapoff",
    "io_uring_setup", "io_uring_enter", "io_uring_register", "open_by_handle_at", "name_to_handle_at", "acct",
    "quotactl", "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "sethostname", "setdomainname", "iopl",
    "ioperm", "syslog", "personality", "chmod", "fchmodat", "chown", "fchown", "lchown", "fchownat", "setxattr",
    "lsetxattr", "fsetxattr", "removexattr", "lremovexattr", "fremovexattr", "utime", "utimes", "utimensat",
    "futimesat", "link", "linkat", "symlink", "symlinkat", "mknod", "mknodat", "socket", "connect", "bind", "listen",
    "tkill", "setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setgroups", "capset",
    "memfd_create", "pidfd_open", "pidfd_getfd", "pidfd_send_signal", "setsid", "setpgid", NULL};

static ct_status apply_seccomp(ct_err *err) {
    scmp_filter_ctx f = seccomp_init(SCMP_ACT_ALLOW);
    if (!f) return ct_fail(err, CT_STATUS_SYSTEM, "sandbox: seccomp: out of memory");
    int rc = seccomp_attr_set(f, SCMP_FLTATR_CTL_TSYNC, 1);   // every thread of the process
    for (int i = 0; denied[i] && rc == 0; i++) {
        int nr = seccomp_syscall_resolve_name(denied[i]);
        if (nr != __NR_SCMP_ERROR) rc = seccomp_rule_add(f, SCMP_ACT_ERRNO(EPERM), nr, 0);
    }
#ifndef __SANITIZE_ADDRESS__
    if (rc == 0) rc = seccomp_rule_add(f, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
                                       SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, 0));
#endif
    if (rc == 0) rc = seccomp_rule_add(f, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
    // no keystrokes pushed into a terminal, no leaving the parent's reach
    if (rc == 0) rc = seccomp_rule_add(f, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(ioctl), 1, SCMP_A1(SCMP_CMP_EQ, TIOCSTI));
    if (rc == 0) rc = seccomp_rule_add(f, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(ioctl), 1, SCMP_A1(SCMP_CMP_EQ, TIOCLINUX));
    if (rc == 0) rc = seccomp_rule_add(f, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(prctl), 1,
                                       SCMP_A0(SCMP_CMP_EQ, PR_SET_PDEATHSIG));
    // signals: to this process only
    pid_t self = getpid();
    if (rc == 0) rc = seccomp_rule_add(f, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(kill), 1, SCMP_A0(SCMP_CMP_NE, (scmp_datum_t)self));
    if (rc == 0) rc = seccomp_rule_add(f, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(tgkill), 1, SCMP_A0(SCMP_CMP_NE, (scmp_datum_t)self));
    if (rc == 0) rc = seccomp_load(f);
    seccomp_release(f);
    if (rc) return ct_fail(err, CT_STATUS_SYSTEM, "sandbox: seccomp: %s", strerror(-rc));
    return CT_OK;
}

static ct_status set_limit(int res, int64_t v, const char *what, ct_err *err) {
    struct rlimit rl;
    if (getrlimit(res, &rl)) return ct_fail(err, CT_STATUS_SYSTEM, "sandbox: %s limit: %s", what, strerror(errno));
    if (v > 0 && (rl.rlim_max == RLIM_INFINITY || (rlim_t)v < rl.rlim_max)) rl.rlim_max = (rlim_t)v;
    if (v > 0) rl.rlim_cur = rl.rlim_max;
    if (setrlimit(res, &rl)) return ct_fail(err, CT_STATUS_SYSTEM, "sandbox: %s limit: %s", what, strerror(errno));
    return CT_OK;
}

// No capabilities, now or after any exec (the bounding and ambient sets emptied).
static void drop_capabilities(void) {
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
    for (int c = 0; c <= 63; c++)
        if (prctl(PR_CAPBSET_DROP, c, 0, 0, 0) && errno == EINVAL) break;
    struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct d[2];
    memset(d, 0, sizeof d);
    syscall(SYS_capset, &h, d);
}

// OpenBLAS: its pool of threads, started when the library loaded, stops here and starts again at
// the next product, from (and so confined like) the thread that asks for it.
int blas_thread_shutdown_(void);

ct_status ct_confine(const ct_confine_policy *p, ct_isolation *iso, ct_err *err) {
    ct_confine_probe(iso);
    if (iso->landlock_abi < 1)
        return ct_fail(err, CT_STATUS_UNSUPPORTED, "sandbox: this kernel offers no Landlock (Linux 5.13 or later, "
                       "with landlock among its LSMs)");
    if (!iso->seccomp) return ct_fail(err, CT_STATUS_UNSUPPORTED, "sandbox: this kernel offers no seccomp filters");
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
        return ct_fail(err, CT_STATUS_SYSTEM, "sandbox: no_new_privs: %s", strerror(errno));
    struct rlimit no_core = {0, 0};
    if (setrlimit(RLIMIT_CORE, &no_core)) return ct_fail(err, CT_STATUS_SYSTEM, "sandbox: core limit: %s", strerror(errno));
#ifdef __SANITIZE_ADDRESS__   // AddressSanitizer's shadow memory alone is past any such limit
    int64_t memory = 0;
#else
    int64_t memory = p->memory;
#endif
    ct_status rc = set_limit(RLIMIT_DATA, memory, "memory", err);
    if (!rc) rc = set_limit(RLIMIT_FSIZE, p->file_size, "file size", err);
    if (!rc) rc = set_limit(RLIMIT_NOFILE, 4096, "open files", err);
    if (rc) return rc;
    iso->memory = memory;
    iso->file_size = p->file_size;
    drop_capabilities();
    blas_thread_shutdown_();
    if ((rc = apply_landlock(p, iso->landlock_abi, err))) return rc;
    return apply_seccomp(err);
}
