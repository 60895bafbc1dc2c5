// nolandlock.c - runs a command on a "kernel without Landlock": a seccomp filter makes the
// Landlock system calls fail with ENOSYS, as on Linux before 5.13 (tests/attacks/test_run.sh).
//   nolandlock PROGRAM ARGS...
#include <errno.h>
#include <seccomp.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    scmp_filter_ctx f = seccomp_init(SCMP_ACT_ALLOW);
    const char *calls[] = {"landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self"};
    for (int i = 0; i < 3; i++) seccomp_rule_add(f, SCMP_ACT_ERRNO(ENOSYS), seccomp_syscall_resolve_name(calls[i]), 0);
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || seccomp_load(f)) {
        perror("nolandlock");
        return 2;
    }
    execv(argv[1], argv + 1);
    perror("nolandlock: exec");
    return 2;
}
