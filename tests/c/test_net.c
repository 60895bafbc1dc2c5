// test_net.c - the HTTP layer, the on-disk cache and SHA-1, against tests/net/server.py started
// on a random loopback port (python3; ../shared/reference/fixtures/neuronpedia beside the
// project). CT_NET_LOOPS (default 1000) sets the request count of the leak loop, which
// tests/cli/test_network.sh also runs under valgrind.
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "net/cache.h"
#include "check.h"
#include "net/http.h"
#include "net/neuronpedia.h"
#include "core/sha256.h"

static pid_t server_pid;
static char base[128], tmpdir[256];

static void start_server(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/ctrace-test-net-XXXXXX");
    if (!mkdtemp(tmpdir)) exit(1);
    char files[400], cmd[1000];
    snprintf(files, sizeof files, "%s/files/test/norange", tmpdir);
    snprintf(cmd, sizeof cmd, "mkdir -p %s && head -c 300000 /dev/urandom > %s/big.bin", files, files);
    if (system(cmd) != 0) exit(1);
    snprintf(files, sizeof files, "%s/files", tmpdir);
    int fd[2];
    if (pipe(fd) != 0) exit(1);
    server_pid = fork();
    if (server_pid == 0) {
        dup2(fd[1], 1);
        close(fd[0]);
        execlp("python3", "python3", "tests/net/server.py", "../shared/reference/fixtures/neuronpedia", files, (char *)NULL);
        _exit(127);
    }
    close(fd[1]);
    char line[64] = "";
    FILE *f = fdopen(fd[0], "r");
    int port = 0;
    if (!fgets(line, sizeof line, f) || sscanf(line, "PORT %d", &port) != 1) {
        printf("Bail out! the test server did not start\n");
        exit(1);
    }
    fclose(f);
    snprintf(base, sizeof base, "http://127.0.0.1:%d", port);
}

static void stop_server(void) {
    kill(server_pid, SIGKILL);
    waitpid(server_pid, NULL, 0);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    if (system(cmd) != 0) printf("# could not remove %s\n", tmpdir);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

// GET url into memory; returns the request (caller frees).
static ct_http_req get(const char *path, const ct_http_opts *o) {
    static char url[512];
    snprintf(url, sizeof url, "%s%s", base, path);
    ct_http_req r = {.url = url, .accept = "application/json"};
    ct_http_perform(&r, 1, o);
    return r;
}

static void test_sha1(void) {
    ct_sha1 s;
    char hex[41];
    ct_sha1_init(&s);
    ct_sha1_update(&s, "abc", 3);
    ct_sha1_hex(&s, hex);
    ok(strcmp(hex, "a9993e364706816aba3e25717850c26c9cd0d89d") == 0, "SHA-1('abc') (FIPS 180 example)");
    ct_sha1_init(&s);
    const char *two = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    ct_sha1_update(&s, two, strlen(two));
    ct_sha1_hex(&s, hex);
    ok(strcmp(hex, "84983e441c3bd26ebaae4aa1f95129e5e54670f1") == 0, "SHA-1 of the 448-bit FIPS example");
    char path[300], cmd[400], want[64] = "";
    snprintf(path, sizeof path, "%s/files/test/norange/big.bin", tmpdir);
    snprintf(cmd, sizeof cmd, "git hash-object %s", path);
    FILE *p = popen(cmd, "r");
    if (p && fgets(want, sizeof want, p)) want[strcspn(want, "\n")] = 0;
    if (p) pclose(p);
    ct_err err;
    ok(ct_git_blob_sha1_file(NULL, path, hex, &err) == CT_OK && strcmp(hex, want) == 0,
       "git blob id of a 300 kB file = git hash-object (%s)", want);
}

static void test_cache(void) {
    ct_cache c;
    char dir[300], *data;
    size_t n;
    ct_err err = {0};
    snprintf(dir, sizeof dir, "%s/cache", tmpdir);
    ok(ct_cache_open(&c, dir, 10000, &err) == CT_OK, "cache opens (creates) %s", dir);
    ok(ct_cache_get(&c, "k1", &data, &n, &err) == CT_STATUS_NOT_FOUND, "miss before any put");
    ok(ct_cache_put(&c, "k1", "hello", 5, &err) == CT_OK && ct_cache_get(&c, "k1", &data, &n, &err) == CT_OK &&
           n == 5 && memcmp(data, "hello", 5) == 0,
       "put then get gives the same bytes");
    free(data);
    // find the entry file and damage it in three ways
    char sub[400], path[500];
    ct_sha256 s;
    char h[65];
    ct_sha256_init(&s);
    ct_sha256_update(&s, "k1", 2);
    ct_sha256_hex(&s, h);
    snprintf(sub, sizeof sub, "%s/%.2s", dir, h);
    snprintf(path, sizeof path, "%s/%s.entry", sub, h);
    struct stat sb;
    ok(stat(path, &sb) == 0, "entry stored at <dir>/<h[0:2]>/<sha256(key)>.entry");
    FILE *f = fopen(path, "r+b");
    fseek(f, -1, SEEK_END);
    fputc('X', f);   // last payload byte
    fclose(f);
    ok(ct_cache_get(&c, "k1", &data, &n, &err) == CT_STATUS_NOT_FOUND && stat(path, &sb) != 0,
       "a changed payload byte fails the hash: reported as a miss and the entry deleted");
    ct_cache_put(&c, "k1", "hello", 5, &err);
    ok(stat(path, &sb) == 0 && truncate(path, sb.st_size - 2) == 0, "entry rewritten, then truncated by 2 bytes");
    ok(ct_cache_get(&c, "k1", &data, &n, &err) == CT_STATUS_NOT_FOUND && stat(path, &sb) != 0,
       "a truncated entry is a miss and is deleted");
    // an entry renamed to another key's name (a wrong file in the right place)
    ct_cache_put(&c, "k2", "other", 5, &err);
    char p2[500];
    ct_sha256_init(&s);
    ct_sha256_update(&s, "k2", 2);
    ct_sha256_hex(&s, h);
    snprintf(p2, sizeof p2, "%s/%.2s/%s.entry", dir, h, h);
    mkdir(sub, 0755);
    ok(rename(p2, path) == 0 && ct_cache_get(&c, "k1", &data, &n, &err) == CT_STATUS_NOT_FOUND,
       "an entry holding another key is not returned");

    // eviction: 30 entries of 1000 bytes under a 10000-byte limit, the first five used recently
    char payload[1000], key[32];
    memset(payload, 'p', sizeof payload);
    for (int i = 0; i < 30; i++) {
        snprintf(key, sizeof key, "e%d", i);
        ct_cache_put(&c, key, payload, sizeof payload, &err);
        // spread modification times so the order is certain
        ct_sha256_init(&s);
        ct_sha256_update(&s, key, strlen(key));
        ct_sha256_hex(&s, h);
        snprintf(p2, sizeof p2, "%s/%.2s/%s.entry", dir, h, h);
        struct timeval tv[2] = {{1000000 + i, 0}, {1000000 + i, 0}};
        utimes(p2, tv);
    }
    for (int i = 0; i < 5; i++) {
        snprintf(key, sizeof key, "e%d", i);
        ok(ct_cache_get(&c, key, &data, &n, &err) == CT_OK, "entry %s read (now recently used)", key);
        free(data);
    }
    int64_t total = 0;
    ok(ct_cache_trim(&c, &total, &err) == CT_OK && total <= 9000 && total > 0, "trim leaves %lld bytes <= 9000", (long long)total);
    int kept_recent = 0, kept_old = 0;
    for (int i = 0; i < 30; i++) {
        snprintf(key, sizeof key, "e%d", i);
        if (ct_cache_get(&c, key, &data, &n, &err) == CT_OK) {
            free(data);
            if (i < 5) kept_recent++;
            else kept_old++;
        }
    }
    ok(kept_recent == 5 && kept_old < 25, "eviction removes the least recently used: the 5 read entries stay (%d), %d of 25 others",
       kept_recent, kept_old);

    // two processes writing and reading the same keys: every read is whole or a miss
    int bad = 0;
    pid_t kids[2];
    for (int k = 0; k < 2; k++) {
        if ((kids[k] = fork()) == 0) {
            ct_cache cc;
            ct_cache_open(&cc, dir, 1 << 20, NULL);
            char buf[4096];
            int errors = 0;
            for (int i = 0; i < 400; i++) {
                snprintf(key, sizeof key, "shared%d", i % 10);
                size_t len = 100 + (size_t)(i * 37 % 3000);
                memset(buf, 'a' + k, len);
                ct_cache_put(&cc, key, buf, len, NULL);
                if (ct_cache_get(&cc, key, &data, &n, NULL) == CT_OK) {
                    for (size_t j = 1; j < n; j++) errors += data[j] != data[0];
                    free(data);
                }
                if (i % 50 == 0) ct_cache_trim(&cc, NULL, NULL);
            }
            _exit(errors ? 1 : 0);
        }
    }
    for (int k = 0; k < 2; k++) {
        int stt;
        waitpid(kids[k], &stt, 0);
        bad += !WIFEXITED(stt) || WEXITSTATUS(stt) != 0;
    }
    ok(bad == 0, "two processes x 400 puts and gets of 10 shared keys: every read whole");
}

static volatile int cancel_after_ms;
static ct_ctx cancel_ctx;   // its cancel flag is set by another thread, as a signal handler would
static void *canceller(void *arg) {
    usleep((useconds_t)cancel_after_ms * 1000);
    cancel_ctx.cancel = 1;
    return NULL;
}

static void test_http(void) {
    ct_http_opts o = ct_http_defaults();
    o.backoff_ms = 20;
    ct_http_req r = get("/np/api/feature/gemma-2-2b/18-gemmascope-transcoder-16k/7731", &o);
    ct_np_feature f;
    ct_err err;
    ok(r.rc == CT_OK && r.status == 200 && ct_np_parse_feature(r.body_out, r.body_out_len, &f, &err) == CT_OK &&
           strcmp(f.label, "rivers and waterways in France") == 0,
       "GET the fixture feature (gzip-encoded by the server): label '%s'", r.rc == CT_OK ? f.label : r.err.msg);
    if (r.rc == CT_OK) ct_np_feature_free(&f);
    ct_http_req_free(&r);

    // the slow route (3 s) with a 300 ms limit and no retries: TIMEOUT, well before the server answers
    // (the bounds here guard against hangs, with room for a loaded machine)
    o.timeout_ms = 300;
    o.max_retries = 0;
    double t0 = now();
    r = get("/np/api/feature/fault-slow/0-x/1", &o);
    double dt = now() - t0;
    ok(r.rc == CT_STATUS_TIMEOUT && dt < 2.5, "a response slower than the limit: TIMEOUT after %.2f s", dt);
    ct_http_req_free(&r);

    // cancellation stops a request in flight
    o.timeout_ms = 10000;
    ct_ctx_init(&cancel_ctx);
    o.ctx = &cancel_ctx;
    cancel_after_ms = 200;
    pthread_t th;
    pthread_create(&th, NULL, canceller, NULL);
    t0 = now();
    r = get("/np/api/feature/fault-slow/0-x/2", &o);
    dt = now() - t0;
    pthread_join(th, NULL);
    o.ctx = NULL;
    ok(r.rc == CT_STATUS_CANCELLED && dt < 2.0, "cancelled 0.2 s into a 3 s response: CANCELLED after %.2f s", dt);
    ct_http_req_free(&r);

    // an unreachable server: NETWORK at once (no retries wasted)
    o = ct_http_defaults();
    ct_http_req u = {.url = "http://127.0.0.1:1/x"};
    t0 = now();
    ct_http_perform(&u, 1, &o);
    ok(u.rc == CT_STATUS_NETWORK && now() - t0 < 2, "connection refused: NETWORK (%s)", u.err.msg);
    ct_http_req_free(&u);

    // a download whose server ignores Range: the partial file is replaced, not appended to
    char out[400], want[400], url[512];
    snprintf(out, sizeof out, "%s/partial.bin", tmpdir);
    snprintf(want, sizeof want, "%s/files/test/norange/big.bin", tmpdir);
    FILE *g = fopen(out, "wb");
    fputs("garbage that is not the file's beginning", g);
    fclose(g);
    snprintf(url, sizeof url, "%s/cdn/test/norange/big.bin", base);
    ct_http_req d = {.url = url, .out_path = out};
    ct_http_perform(&d, 1, &o);
    char h1[65], h2[65];
    ok(d.rc == CT_OK && ct_sha256_file(NULL, out, h1, &err) == CT_OK && ct_sha256_file(NULL, want, h2, &err) == CT_OK &&
           strcmp(h1, h2) == 0,
       "Range ignored (200 to a range request): the file is rewritten from byte 0 and matches");
    ct_http_req_free(&d);

    // the credential header goes only to URLs under its prefix
    ct_http_req a[2] = {{.url = url, .auth = "x-api-key: K", .auth_prefix = "http://elsewhere/"},
                        {.url = base, .auth = "x-api-key: K", .auth_prefix = base}};
    char u0[600], u1[600];
    snprintf(u0, sizeof u0, "%s/np/api/feature/m/1-x/5", base);
    snprintf(u1, sizeof u1, "%s/np/api/feature/m/1-x/6", base);
    a[0].url = u0;
    a[1].url = u1;
    ct_http_req reset = {.url = base, .method = "POST"};
    char ru[300];
    snprintf(ru, sizeof ru, "%s/reset", base);
    reset.url = ru;
    ct_http_perform(&reset, 1, &o);
    ct_http_req_free(&reset);
    ct_http_perform(a, 2, &o);
    ct_http_req st = get("/stats", &o);
    ok(a[0].rc == CT_OK && a[1].rc == CT_OK && st.body_out && strstr(st.body_out, "\"np.x-api-key\":1"),
       "x-api-key sent to its own server only (stats: %s)", st.body_out ? st.body_out : "none");
    for (int i = 0; i < 2; i++) ct_http_req_free(&a[i]);
    ct_http_req_free(&st);

    // many requests, 8 at a time, for leak checkers (ASan here, valgrind in test_network.sh)
    const char *e = getenv("CT_NET_LOOPS");
    int loops = e ? atoi(e) : 1000, good = 0;
    enum { B = 50 };
    static char urls[B][256];
    for (int done = 0; done < loops; done += B) {
        ct_http_req rs[B];
        int m = loops - done < B ? loops - done : B;
        memset(rs, 0, sizeof rs);
        for (int i = 0; i < m; i++) {
            snprintf(urls[i], sizeof urls[i], "%s/np/api/feature/m/%d-x/%d", base, (done + i) % 26, done + i);
            rs[i].url = urls[i];
            rs[i].accept = "application/json";
        }
        ct_http_perform(rs, m, &o);
        for (int i = 0; i < m; i++) {
            good += rs[i].rc == CT_OK && rs[i].status == 200;
            ct_http_req_free(&rs[i]);
        }
    }
    ok(good == loops, "%d of %d GET requests, 8 at a time, answered 200", good, loops);
}

int main(void) {
    start_server();
    test_sha1();
    test_cache();
    test_http();
    stop_server();
    return check_done();
}
