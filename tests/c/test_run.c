// test_run.c - run/txn.h and run/child.h by hand: the outputs of a staging directory (only regular
// files, hashed), the commit (results/ replaced whole, a link in its place replaced and never
// followed), removal that never follows a link, reads of a folder's files without following
// links, the folder lock, frames and their limits, and the parent's wait (exit, timeout, a request
// answered, a report, a message out of protocol).
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "core/ctx.h"
#include "core/sha256.h"
#include "run/child.h"
#include "run/txn.h"

static char tmp[256];

static void put(const char *rel, const char *text) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", tmp, rel);
    FILE *f = fopen(p, "w");
    fputs(text, f);
    fclose(f);
}

static int has(const char *rel) {
    char p[512];
    struct stat st;
    snprintf(p, sizeof p, "%s/%s", tmp, rel);
    return lstat(p, &st) == 0;
}

static void answer(void *data, const char *req, size_t n, char **reply, size_t *reply_n) {
    (void)data;
    *reply = malloc(n + 4);
    memcpy(*reply, "re:", 3);
    memcpy(*reply + 3, req, n);
    *reply_n = n + 3;
}

int main(void) {
    snprintf(tmp, sizeof tmp, "/tmp/ct_test_run_XXXXXX");
    if (!mkdtemp(tmp)) return 1;
    char p[4200], q[4200];
    ct_err err = {0};
    put("outside.txt", "outside\n");

    // outputs: regular files, sorted, hashed
    char staging[4096];
    ok(ct_run_staging(staging, sizeof staging, tmp, &err) == CT_OK && strstr(staging, "/.ctrace-staging-"), "staging made");
    snprintf(p, sizeof p, "%s/sub", staging);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/b.txt", staging);
    FILE *f = fopen(p, "w");
    fputs("abc", f);
    fclose(f);
    snprintf(p, sizeof p, "%s/sub/a.txt", staging);
    f = fopen(p, "w");
    fclose(f);
    ct_run_file *files;
    int n;
    ok(ct_run_outputs(NULL, staging, &files, &n, &err) == CT_OK && n == 2 && !strcmp(files[0].path, "b.txt") &&
           !strcmp(files[1].path, "sub/a.txt") && files[0].size == 3 &&
           !strcmp(files[0].sha256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
       "outputs: two files, sorted, sizes and SHA-256 (of \"abc\")");
    ct_run_files_free(files, n);
    snprintf(q, sizeof q, "%s/outside.txt", tmp);
    snprintf(p, sizeof p, "%s/sub/link", staging);
    symlink(q, p);
    ok(ct_run_outputs(NULL, staging, &files, &n, &err) == CT_STATUS_BAD_FORMAT && strstr(err.msg, "only regular files"),
       "outputs: a link is refused (%s)", err.msg);
    unlink(p);
    snprintf(p, sizeof p, "%s/hard", staging);
    link(q, p);
    ok(ct_run_outputs(NULL, staging, &files, &n, &err) == CT_STATUS_BAD_FORMAT, "outputs: a second hard link is refused");
    unlink(p);
    mkfifo(p, 0644);
    ok(ct_run_outputs(NULL, staging, &files, &n, &err) == CT_STATUS_BAD_FORMAT, "outputs: a FIFO is refused");
    unlink(p);

    // commit over a results/ that is a link to a directory outside: the link is replaced, the
    // directory it named untouched
    snprintf(p, sizeof p, "%s/elsewhere", tmp);
    mkdir(p, 0755);
    put("elsewhere/keep.txt", "keep\n");
    snprintf(q, sizeof q, "%s/results", tmp);
    symlink(p, q);
    ok(ct_run_commit(staging, q, &err) == CT_OK, "commit over a link");
    struct stat st;
    ok(lstat(q, &st) == 0 && S_ISDIR(st.st_mode) && has("results/b.txt") && has("elsewhere/keep.txt") &&
           !has("elsewhere/b.txt") && !has(strrchr(staging, '/') + 1),
       "results/ is the new directory; the linked directory untouched; staging gone");
    // a second commit replaces results/ whole
    ok(ct_run_staging(staging, sizeof staging, tmp, &err) == CT_OK, "second staging");
    snprintf(p, sizeof p, "%s/c.txt", staging);
    f = fopen(p, "w");
    fclose(f);
    ok(ct_run_commit(staging, q, &err) == CT_OK && has("results/c.txt") && !has("results/b.txt"),
       "a commit replaces results/ whole (old files gone)");
    // staging left by a killed run is removed by the next; removal never follows a link
    ok(ct_run_staging(staging, sizeof staging, tmp, &err) == CT_OK, "third staging");
    snprintf(p, sizeof p, "%s/out", staging);
    snprintf(q, sizeof q, "%s/elsewhere", tmp);
    symlink(q, p);
    char left[4096];
    snprintf(left, sizeof left, "%s", staging);
    ok(ct_run_staging(staging, sizeof staging, tmp, &err) == CT_OK && access(left, F_OK) != 0 && has("elsewhere/keep.txt"),
       "a left-over staging directory is removed, the directory its link names untouched");
    ok(ct_remove_tree(staging, &err) == CT_OK && access(staging, F_OK) != 0, "remove_tree");

    // reading a folder's files: never through a link, only regular files, bounded
    mkdir((snprintf(p, sizeof p, "%s/expected", tmp), p), 0755);
    put("expected/a.json", "{\"x\": 1}");
    char *buf;
    size_t len;
    ok(ct_run_read(tmp, "expected/a.json", 100, &buf, &len, &err) == CT_OK && len == 8 && !strcmp(buf, "{\"x\": 1}"),
       "run_read: a regular file");
    free(buf);
    ok(ct_run_read(tmp, "expected/a.json", 4, &buf, &len, &err) == CT_STATUS_TOO_LARGE, "run_read: over the bound");
    snprintf(p, sizeof p, "%s/expected/l.json", tmp);
    snprintf(q, sizeof q, "%s/outside.txt", tmp);
    symlink(q, p);
    ok(ct_run_read(tmp, "expected/l.json", 100, &buf, &len, &err) != CT_OK, "run_read: a link is refused (%s)", err.msg);
    snprintf(p, sizeof p, "%s/linkdir", tmp);
    snprintf(q, sizeof q, "%s/elsewhere", tmp);
    symlink(q, p);
    ok(ct_run_read(tmp, "linkdir/keep.txt", 100, &buf, &len, &err) != CT_OK, "run_read: a linked directory is refused");
    ok(ct_run_read(tmp, "../outside.txt", 100, &buf, &len, &err) == CT_STATUS_BAD_ARG, "run_read: '..' is refused");
    snprintf(p, sizeof p, "%s/expected/fifo", tmp);
    mkfifo(p, 0644);
    ok(ct_run_read(tmp, "expected/fifo", 100, &buf, &len, &err) == CT_STATUS_BAD_FORMAT, "run_read: a FIFO, without blocking");

    // the lock: one exclusive holder; a shared one waits for none
    int a, b;
    ok(ct_run_lock(&a, tmp, 1, &err) == CT_OK, "lock taken");
    ok(ct_run_lock(&b, tmp, 1, &err) == CT_STATUS_BUSY && strstr(err.msg, "another ctrace run"), "a second lock: BUSY");
    ok(ct_run_lock(&b, tmp, 0, &err) == CT_STATUS_BUSY, "a shared lock while a run holds it: BUSY");
    ct_run_unlock(a);
    ok(ct_run_lock(&b, tmp, 0, &err) == CT_OK, "shared once released");
    ct_run_unlock(b);

    // frames: a payload over the receiver's bound is refused before it is read
    int sv[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
    char kind, *msg;
    ok(ct_frame_send(sv[0], 'Q', "hello", 5, 0, &err) == CT_OK &&
           ct_frame_recv(sv[1], 16, &kind, &msg, &len, ct_now() + 5, &err) == CT_OK && kind == 'Q' && len == 5 &&
           !strcmp(msg, "hello"),
       "a frame, whole");
    free(msg);
    ct_frame_send(sv[0], 'Q', "0123456789abcdefXYZ", 19, 0, &err);
    ok(ct_frame_recv(sv[1], 16, &kind, &msg, &len, ct_now() + 5, &err) == CT_STATUS_TOO_LARGE, "a frame over the bound");
    close(sv[0]);
    ok(ct_frame_recv(sv[1], 16, &kind, &msg, &len, ct_now() + 1, &err) != CT_OK, "the other end closed");
    close(sv[1]);

    // the parent's wait: a child that asks, reports and exits; one that never ends; one that
    // breaks the protocol
    ct_child c;
    ct_child_end end;
    char *env[] = {NULL};
    char *ask[] = {"sh", "-c",
                   "printf '\\005\\000\\000\\000Qhello' >&3; head -c 13 <&3 >/dev/null; "
                   "printf '\\002\\000\\000\\000R{}' >&3; echo relayed >&2; exit 0", NULL};
    ok(ct_child_spawn(&c, "/bin/sh", ask, env, &err) == CT_OK &&
           ct_child_wait(&c, ct_now() + 10, answer, NULL, NULL, &end, &err) == CT_OK && end.how == CT_CHILD_EXITED &&
           end.code == 0 && end.report && !strcmp(end.report, "{}"),
       "a child asks, is answered, reports and exits 0");
    ct_child_end_free(&end);
    char *forever[] = {"sh", "-c", "trap '' TERM; while :; do :; done", NULL};
    double t0 = ct_now();
    ok(ct_child_spawn(&c, "/bin/sh", forever, env, &err) == CT_OK &&
           ct_child_wait(&c, ct_now() + 0.5, NULL, NULL, NULL, &end, &err) == CT_OK && end.how == CT_CHILD_TIMEOUT &&
           ct_now() - t0 < 3,
       "a child that ignores SIGTERM is killed after the grace period (%.2f s)", ct_now() - t0);
    char *rogue[] = {"sh", "-c", "printf '\\002\\000\\000\\000X{}' >&3; sleep 30", NULL};
    t0 = ct_now();
    ok(ct_child_spawn(&c, "/bin/sh", rogue, env, &err) == CT_OK &&
           ct_child_wait(&c, ct_now() + 20, NULL, NULL, NULL, &end, &err) == CT_STATUS_BAD_RESPONSE && ct_now() - t0 < 5,
       "a message out of protocol stops the child (%s)", err.msg);
    ct_child_end_free(&end);

    ct_remove_tree(tmp, &err);
    return check_done();
}
