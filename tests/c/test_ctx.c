// test_ctx.c - the engine context and the file layer every read and write goes through
// (core/ctx.h, core/fileio.h): read roots checked on the file actually opened (links out of a
// root refused, a FIFO refused without blocking), the record of files read (each once, by its
// resolved directory and own name), write-root checks, roots that a failed change keeps and a
// lock makes final, atomic writes that leave the old file whole when the disk fills
// (RLIMIT_FSIZE stands in for a full disk) or the writer is killed, file modes from the umask,
// cancellation and the deadline, address resolution through the resolver.
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "core/ctx.h"
#include "core/fileio.h"
#include "core/sha256.h"

static char tmp[256];

// Bytes of [p, p + n) resident in memory (mincore; p page-aligned).
static size_t resident(const void *p, size_t n) {
    long page = sysconf(_SC_PAGESIZE);
    size_t pages = (n + (size_t)page - 1) / (size_t)page, r = 0;
    unsigned char *v = malloc(pages);
    if (v && mincore((void *)p, n, v) == 0)
        for (size_t i = 0; i < pages; i++) r += (v[i] & 1) ? (size_t)page : 0;
    free(v);
    return r > n ? n : r;
}

static void put(const char *name, const char *text) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", tmp, name);
    FILE *f = fopen(p, "wb");
    fputs(text, f);
    fclose(f);
}

static char *path(const char *name) {
    static char p[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof p[k], "%s/%s", tmp, name);
    return p[k];
}

static int count_files(const char *dir) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "ls -A %s | wc -l", dir);
    FILE *p = popen(cmd, "r");
    int n = -1;
    if (p && fscanf(p, "%d", &n) != 1) n = -1;
    if (p) pclose(p);
    return n;
}

static ct_status fake_resolve(void *data, const char *uri, char *out, size_t n, ct_err *err) {
    (*(int *)data)++;
    snprintf(out, n, "%s/%s", tmp, uri + strlen("test://"));
    return CT_OK;
}

int main(void) {
    snprintf(tmp, sizeof tmp, "/tmp/ct_test_ctx_XXXXXX");
    if (!mkdtemp(tmp)) return 1;
    mkdir(path("in"), 0755);
    mkdir(path("in/results"), 0755);
    mkdir(path("out"), 0755);
    put("in/a.txt", "alpha");
    put("out/secret.txt", "secret");
    symlink(path("out/secret.txt"), path("in/link.txt"));
    symlink(path("in/a.txt"), path("in/same.txt"));
    mkfifo(path("in/fifo"), 0644);
    ct_err err = {0};
    ct_ctx c;
    ct_ctx_init(&c);
    const char *roots[] = {path("in")};
    ok(ct_ctx_set_read_roots(&c, roots, 1, &err) == CT_OK, "a read root");
    ok(ct_ctx_set_write_root(&c, path("in/results"), &err) == CT_OK, "a write root");

    // reads
    char *buf;
    size_t len;
    ok(ct_read_file(&c, path("in/a.txt"), &buf, &len, 0, &err) == CT_OK && len == 5 && memcmp(buf, "alpha", 5) == 0,
       "a file under the root is read");
    free(buf);
    ok(ct_read_file(&c, path("in/../in/a.txt"), &buf, &len, 0, &err) == CT_OK, "the same file by another name");
    free(buf);
    ct_status rc = ct_read_file(&c, path("out/secret.txt"), &buf, &len, 0, &err);
    ok(rc == CT_STATUS_BAD_ARG && strstr(err.msg, "may read only under") && !strstr(err.msg, "secret\n"),
       "a file outside is refused: %s", err.msg);
    rc = ct_read_file(&c, path("in/link.txt"), &buf, &len, 0, &err);
    ok(rc == CT_STATUS_BAD_ARG && strstr(err.msg, "may read only under"), "a link inside pointing outside is refused: %s", err.msg);
    void *map;
    size_t size;
    rc = ct_map_file(&c, path("in/link.txt"), &map, &size, &err);
    ok(rc == CT_STATUS_BAD_ARG, "mapping it too");
    time_t t0 = time(NULL);
    rc = ct_read_file(&c, path("in/fifo"), &buf, &len, 0, &err);
    ok(rc == CT_STATUS_IO && strstr(err.msg, "not a regular file") && time(NULL) - t0 < 2,
       "a FIFO is refused at once, without waiting for a writer: %s", err.msg);
    rc = ct_read_file(&c, path("in/missing.txt"), &buf, &len, 0, &err);
    ok(rc == CT_STATUS_NOT_FOUND, "a missing file: NOT_FOUND");
    ok(ct_ctx_check_read(&c, path("in"), &err) == CT_OK && ct_ctx_check_read(&c, path("out"), &err) == CT_STATUS_BAD_ARG,
       "directories: inside allowed, outside refused");
    char hex[65];
    ok(ct_sha256_file(&c, path("out/secret.txt"), hex, &err) == CT_STATUS_BAD_ARG, "hashing goes through the same check");

    // the record: each file once, resolved; the run's own results are no input
    put("in/results/r.json", "{}");
    ok(ct_read_file(&c, path("in/results/r.json"), &buf, &len, 0, &err) == CT_OK, "reading a result back");
    free(buf);
    ok(ct_read_file(&c, path("in/same.txt"), &buf, &len, 0, &err) == CT_OK, "a link inside to a file inside");
    free(buf);
    char real[PATH_MAX], res[PATH_MAX], link[PATH_MAX + 16];
    realpath(path("in/a.txt"), real);
    realpath(path("in/results/r.json"), res);
    realpath(path("in"), link);
    strcat(link, "/same.txt");
    ok(c.n_files == 3 && strcmp(c.files[0].path, real) == 0 && c.files[0].size == 5 && strcmp(c.files[1].path, res) == 0 &&
           strcmp(c.files[2].path, link) == 0,
       "the record: a.txt once (read by two names), the result, the link by its own name; not the refused files (%d)",
       c.n_files);
    ct_ctx_clear_files(&c);
    ok(c.n_files == 0, "the record starts again");

    // writes
    ok(ct_ctx_check_write(&c, path("in/results/new/x.json"), &err) == CT_OK, "a new file under the write root");
    ok(ct_ctx_check_write(&c, path("in/results/../x.json"), &err) == CT_STATUS_BAD_ARG, "'..' out of it refused");
    ok(ct_write_file(&c, path("out/x.txt"), "x", 1, &err) == CT_STATUS_BAD_ARG && access(path("out/x.txt"), F_OK) != 0,
       "writing outside is refused and nothing is written");
    ok(ct_mkdirs(&c, path("out/sub"), &err) == CT_STATUS_BAD_ARG && access(path("out/sub"), F_OK) != 0,
       "creating a directory outside is refused");
    ok(ct_write_file(&c, path("in/results/w.txt"), "old", 3, &err) == CT_OK, "an atomic write");
    // a full disk: the process may not write more than 8 KiB; the old file stays whole
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit lim;
    getrlimit(RLIMIT_FSIZE, &lim);
    struct rlimit small = {8192, lim.rlim_max};   // the soft limit only: it can be raised again
    setrlimit(RLIMIT_FSIZE, &small);
    char big[100000];
    memset(big, 'y', sizeof big);
    rc = ct_write_file(&c, path("in/results/w.txt"), big, sizeof big, &err);
    setrlimit(RLIMIT_FSIZE, &lim);
    ok(rc == CT_STATUS_IO, "a write past the disk's room fails: %s", err.msg);
    ok(ct_read_file(NULL, path("in/results/w.txt"), &buf, &len, 0, &err) == CT_OK && len == 3 && memcmp(buf, "old", 3) == 0,
       "the old content is intact");
    free(buf);
    ok(count_files(path("in/results")) == 2, "no temporary file is left (%d entries)", count_files(path("in/results")));
    struct stat sb;
    mode_t old_mask = umask(077);
    ct_write_file(&c, path("in/results/m1.txt"), "m", 1, &err);
    umask(022);
    ct_write_file(&c, path("in/results/m2.txt"), "m", 1, &err);
    umask(old_mask);
    int m1 = stat(path("in/results/m1.txt"), &sb) == 0 ? (int)(sb.st_mode & 0777) : -1;
    int m2 = stat(path("in/results/m2.txt"), &sb) == 0 ? (int)(sb.st_mode & 0777) : -1;
    ok(m1 == 0600 && m2 == 0644, "written files get 0666 less the umask (%o, %o)", m1, m2);
    unlink(path("in/results/m1.txt")), unlink(path("in/results/m2.txt"));
    ct_wfile w;
    ok(ct_wfile_open(&c, &w, path("in/results/w.txt"), &err) == CT_OK, "a streamed write");
    fputs("half", w.f);
    ct_wfile_abort(&w);
    ok(ct_read_file(NULL, path("in/results/w.txt"), &buf, &len, 0, &err) == CT_OK && len == 3, "aborted: the old file stays");
    free(buf);

    // roots: a failed change keeps the old ones; once locked they cannot change
    rc = ct_ctx_set_write_root(&c, path("nonexistent"), &err);
    ok(rc == CT_STATUS_IO && ct_ctx_check_write(&c, path("out/x.txt"), &err) == CT_STATUS_BAD_ARG,
       "a failed write-root change keeps the old confinement");
    const char *bad_roots[] = {path("out"), path("nonexistent")};
    ok(ct_ctx_set_read_roots(&c, bad_roots, 2, &err) == CT_STATUS_IO && ct_ctx_check_read(&c, path("out"), &err) == CT_STATUS_BAD_ARG,
       "a failed read-roots change keeps the old ones");
    ct_ctx_lock(&c);
    ok(ct_ctx_set_write_root(&c, "", &err) == CT_STATUS_BAD_ARG && ct_ctx_set_read_roots(&c, NULL, 0, &err) == CT_STATUS_BAD_ARG &&
           ct_ctx_check_write(&c, path("out/x.txt"), &err) == CT_STATUS_BAD_ARG && ct_ctx_check_read(&c, path("out"), &err) == CT_STATUS_BAD_ARG,
       "locked: neither root can be lifted");

    // kill -9 in the middle of a write: the file is the old one or the whole new one
    size_t nbig = 32u << 20;
    char *old = malloc(nbig), *neu = malloc(nbig);
    memset(old, 'o', nbig), memset(neu, 'n', nbig);
    ct_write_file(NULL, path("in/results/big.bin"), old, nbig, &err);
    int whole = 1;
    for (int round = 0; round < 3; round++) {
        pid_t pid = fork();
        if (pid == 0) {
            for (;;) ct_write_file(NULL, path("in/results/big.bin"), (round & 1) ? old : neu, nbig, &err);
        }
        usleep(30000 + 20000 * round);
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        char *got;
        size_t glen;
        if (ct_read_file(NULL, path("in/results/big.bin"), &got, &glen, 0, &err) != CT_OK) {
            whole = 0;
            continue;
        }
        whole &= glen == nbig && (memcmp(got, old, nbig) == 0 || memcmp(got, neu, nbig) == 0);
        free(got);
    }
    ok(whole, "killed (SIGKILL) while rewriting a 32 MB file, three times: always the old or the whole new file");
    free(old), free(neu);
    if (system("sh -c 'rm -f /tmp/ct_test_ctx_*/in/results/big.bin*'")) {}

    // cancellation and deadline
    ok(ct_ctx_check_cancel(&c, &err, "loop") == CT_OK && !ct_ctx_cancelled(NULL), "not cancelled");
    c.cancel = 1;
    rc = ct_ctx_check_cancel(&c, &err, "attribution after %d rows", 3);
    ok(rc == CT_STATUS_CANCELLED && strstr(err.msg, "interrupted: attribution after 3 rows"), "cancel: %s", err.msg);
    c.cancel = 0;
    ct_ctx_set_timeout(&c, 0.05);
    ok(!ct_ctx_cancelled(&c), "before the deadline");
    usleep(80000);
    rc = ct_ctx_check_cancel(&c, &err, "training");
    ok(rc == CT_STATUS_CANCELLED && strstr(err.msg, "timeout: training"), "past the deadline: %s", err.msg);
    ct_ctx_set_timeout(&c, 0);
    ok(!ct_ctx_cancelled(&c), "disarmed");

    // addresses
    char out[512];
    ok(ct_ctx_resolve(&c, "relative/x", out, sizeof out, &err) == CT_OK && strcmp(out, "relative/x") == 0, "a path stays a path");
    ok(ct_ctx_resolve(&c, "test://in/a.txt", out, sizeof out, &err) == CT_STATUS_UNSUPPORTED, "a scheme without a resolver");
    int calls = 0;
    c.resolve = fake_resolve, c.resolve_data = &calls;
    ok(ct_ctx_resolve(&c, "test://in/a.txt", out, sizeof out, &err) == CT_OK && calls == 1 && strcmp(out, path("in/a.txt")) == 0,
       "through the resolver");

    // mappings: a file from 2 MiB on at a 2 MiB boundary, the rest of the reserved range given
    // back, every byte as in the file; the hints set the mapping's flags
    size_t big_n = ((size_t)2 << 20) + 12345, two = (size_t)2 << 20;
    unsigned char *want = malloc(big_n);
    for (size_t i = 0; i < big_n; i++) want[i] = (unsigned char)(i * 7 % 251);
    FILE *bf = fopen(path("in/big.bin"), "wb");
    fwrite(want, 1, big_n, bf);
    fclose(bf);
    ok(ct_map_file(&c, path("in/big.bin"), &map, &size, &err) == CT_OK && size == big_n, "a 2 MiB + 12,345-byte file mapped");
    unsigned long at = (unsigned long)map, end = (at + big_n + 4095) & ~4095UL;
    ok(at % two == 0, "at a 2 MiB boundary (%#lx)", at);
    ok(!reserved_beside(at, end), "nothing left of the reserved range before or after it");
    ok(memcmp(map, want, big_n) == 0, "every byte as in the file, the last page too");
    char fl[256];
    int thp = thp_here();
    ct_map_advise(map, size, CT_ADVISE_HUGE);
    if (!thp) printf("# no transparent huge pages in this kernel: the HUGE hint is not checked\n");
    ok(!thp || (vma_flags(map, fl, sizeof fl) && strstr(fl, " hg")), "HUGE: the mapping hints huge pages (VmFlags:%s)", fl);
    ct_map_advise((char *)map + two, 4096, CT_ADVISE_RANDOM);
    ok(vma_flags((char *)map + two, fl, sizeof fl) && strstr(fl, " rr") && (!thp || (strstr(fl, " nh") && !strstr(fl, " hg"))) &&
           vma_flags(map, fl, sizeof fl) && !strstr(fl, " rr"),
       "RANDOM: on its pages only, taking them out of the HUGE hint");
    ok(memcmp(map, want, big_n) == 0, "the bytes unchanged by the hints");
    ct_unmap_file(map, size);
    ok(vma_flags(map, fl, sizeof fl) == 0 && vma_flags((char *)map + big_n - 1, fl, sizeof fl) == 0, "unmapped whole");
    free(want);

    // ct_prefetch: ranges read in order, at most `ahead` beyond the caller's; a file whose pages
    // were dropped from the cache, in three 1 MiB ranges
    size_t mib = (size_t)1 << 20;
    unsigned char *chunk = calloc(1, 3 * mib);
    int pfd = open(path("in/pf.bin"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int wrote = pfd >= 0 && write(pfd, chunk, 3 * mib) == (ssize_t)(3 * mib) && fsync(pfd) == 0;
    if (pfd >= 0) close(pfd);
    free(chunk);
    void *pm = NULL;
    size_t psize = 0;
    ok(wrote && ct_map_file(&c, path("in/pf.bin"), &pm, &psize, &err) == CT_OK, "a 3 MiB file for the prefetch");
    pfd = open(path("in/pf.bin"), O_RDONLY);
    int dropped = pfd >= 0 && posix_fadvise(pfd, 0, 0, POSIX_FADV_DONTNEED) == 0 && resident(pm, mib) == 0;
    const void *ptr[3] = {pm, (char *)pm + mib, (char *)pm + 2 * mib};
    size_t lens[3] = {mib, mib, mib}, zero[3] = {0, 0, 0};
    ok(ct_prefetch_start(ptr, zero, 3, 1) == NULL, "nothing to read: no thread (NULL), and NULL is accepted by every call");
    ct_prefetch_at(NULL, 0), ct_prefetch_stop(NULL);
    ct_prefetch *pf = ct_prefetch_start(ptr, lens, 3, 0);
    usleep(100 * 1000);
    size_t early = resident(pm, 3 * mib);
    ct_prefetch_at(pf, 0);
    for (int i = 0; i < 100 && resident(pm, mib) < mib; i++) usleep(10 * 1000);
    size_t first = resident(pm, mib);
    ct_prefetch_at(pf, 2);
    ct_prefetch_stop(pf);
    size_t all = resident(pm, 3 * mib);
    if (!dropped) printf("# the kernel kept the file's pages cached: the prefetch's order is not observable here\n");
    // (beyond the range being read, the kernel's own read-ahead may bring pages in: not checked)
    ok(pf && (!dropped || (early == 0 && first == mib)) && all == 3 * mib,
       "ahead 0: nothing read before the caller starts (%zu bytes), range 0 once it does (%zu of %zu); at range 2, "
       "all of it by the stop (%zu of %zu)", early, first, mib, all, 3 * mib);
    pf = ct_prefetch_start(ptr, lens, 3, 0);
    ct_prefetch_stop(pf);
    ok(pf != NULL, "stopped before the caller starts: returns (the thread waiting for it is woken)");
    if (pfd >= 0) close(pfd);
    ct_unmap_file(pm, psize);

    ct_ctx_free(&c);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    if (system(cmd)) return 1;
    return check_done();
}
