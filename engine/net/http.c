// http.c - HTTP requests over libcurl's multi interface (see http.h).
//
// Each request is a small state machine: QUEUED (waiting for a slot or for its retry time),
// RUNNING (an easy handle in the multi), DONE. Redirects are followed here rather than by
// libcurl so that credentials stay on the server they belong to and the headers of the first
// response stay readable (Hugging Face puts file metadata on its redirect).
#include "net/http.h"

#include <cJSON.h>
#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum { QUEUED, RUNNING, DONE };
enum { STOP_NONE, STOP_HEADERS, STOP_SLOW, STOP_DEADLINE };

typedef struct {
    CURL *easy;
    struct curl_slist *headers;
    char *url;                 // current URL (changes on redirects)
    int state, tries, redirects;
    int64_t not_before;        // monotonic ms
    FILE *file;                // out_path, opened per attempt
    int64_t offset;            // bytes on disk when the attempt started (Range start)
    int64_t limit;             // the most bytes the file may hold
    int64_t written;           // body bytes written to the file by this attempt
    int64_t deadline;          // monotonic ms past which the whole request stops; 0 = none
    int64_t t0;                // monotonic ms when the attempt started
    int64_t body_bytes;        // body bytes received by this attempt (file or memory)
    int64_t win_t0, win_bytes; // the current min_rate window: start (ms), body bytes then
    int body_started, too_large, file_too_large, bad_range;
    int stopped;               // why on_progress stopped the attempt: STOP_*
    char *mem;                 // body in memory
    size_t mem_len, mem_cap;
    long retry_after;          // seconds, -1 absent
    char errbuf[CURL_ERROR_SIZE];
    const ct_http_opts *o;
    ct_http_req *r;
} req_state;

ct_http_opts ct_http_defaults(void) {
    return (ct_http_opts){.connect_timeout_ms = 10000, .timeout_ms = 60000, .min_rate = 1024,
                          .max_retries = 4, .backoff_ms = 1000, .backoff_max_ms = 60000,
                          .max_body = (int64_t)64 << 20, .max_file = (int64_t)64 << 30, .max_redirects = 10,
                          .concurrency = 8};
}

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static char user_agent[128];
static unsigned jitter_seed;

static void global_init(void) {
    curl_global_init(CURL_GLOBAL_DEFAULT);
    jitter_seed = (unsigned)time(NULL) ^ (unsigned)getpid() * 2654435761u;
    curl_version_info_data *v = curl_version_info(CURLVERSION_NOW);
    snprintf(user_agent, sizeof user_agent, "ctrace/%s libcurl/%s", CT_VERSION, v ? v->version : "?");
}

const char *ct_http_user_agent(void) {
    pthread_once(&init_once, global_init);
    return user_agent;
}

static int64_t now_ms(void) { return (int64_t)(ct_now() * 1000.0); }

int ct_url_escape(char *buf, size_t cap, const char *s, int keep_slash) {
    size_t n = strlen(buf);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        int keep = isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~' || (keep_slash && c == '/');
        if (n + (keep ? 1 : 3) >= cap) return -1;
        if (keep) buf[n++] = (char)c;
        else n += (size_t)snprintf(buf + n, cap - n, "%%%02X", c);
    }
    buf[n] = 0;
    return 0;
}

void ct_url_base(char *dst, size_t n, const char *url) {
    snprintf(dst, n, "%s", url);
    size_t k = strlen(dst);
    while (k > 0 && dst[k - 1] == '/') dst[--k] = 0;
}

// ---- callbacks --------------------------------------------------------------

static void set_field(char *dst, size_t cap, const char *v, size_t n) {
    if (n >= cap) n = cap - 1;
    memcpy(dst, v, n);
    dst[n] = 0;
}

// The URL of the rel="next" entry of a Link header value (RFC 8288, as GitHub and the Hugging Face
// Hub paginate: `<url>; rel="next", <url>; rel="prev"`) into out; "-" when it does not fit.
static void link_next(char *out, size_t cap, const char *v, size_t n) {
    const char *p = v, *end = v + n;
    while (p < end) {
        const char *lt = memchr(p, '<', (size_t)(end - p));
        const char *gt = lt ? memchr(lt, '>', (size_t)(end - lt)) : NULL;
        if (!gt) return;
        const char *comma = memchr(gt, ',', (size_t)(end - gt)), *pe = comma ? comma : end;
        if (memmem(gt, (size_t)(pe - gt), "rel=\"next\"", 10) || memmem(gt, (size_t)(pe - gt), "rel=next", 8)) {
            if ((size_t)(gt - lt - 1) >= cap) set_field(out, cap, "-", 1);
            else set_field(out, cap, lt + 1, (size_t)(gt - lt - 1));
            return;
        }
        p = comma ? comma + 1 : end;
    }
}

static size_t on_header(char *line, size_t size, size_t nitems, void *ud) {
    req_state *s = ud;
    ct_http_req *r = s->r;
    size_t len = size * nitems;
    if (len >= 5 && memcmp(line, "HTTP/", 5) == 0) {   // a new response: forget the last one's headers
        r->content_type[0] = r->etag[0] = r->linked_etag[0] = r->repo_commit[0] = r->location[0] = 0;
        r->error_code[0] = r->link_next[0] = 0;
        r->content_length = r->linked_size = -1;
        s->retry_after = -1;
        return len;
    }
    const char *colon = memchr(line, ':', len);
    if (!colon) return len;
    size_t klen = (size_t)(colon - line);
    const char *v = colon + 1, *end = line + len;
    while (v < end && (*v == ' ' || *v == '\t')) v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ')) end--;
    size_t vlen = (size_t)(end - v);
#define IS(name) (klen == sizeof(name) - 1 && strncasecmp(line, name, klen) == 0)
    char num[32];
    if (IS("content-type")) set_field(r->content_type, sizeof r->content_type, v, vlen);
    else if (IS("etag")) set_field(r->etag, sizeof r->etag, v, vlen);
    else if (IS("x-linked-etag")) set_field(r->linked_etag, sizeof r->linked_etag, v, vlen);
    else if (IS("x-repo-commit")) set_field(r->repo_commit, sizeof r->repo_commit, v, vlen);
    else if (IS("location")) set_field(r->location, sizeof r->location, v, vlen);
    else if (IS("x-error-code")) set_field(r->error_code, sizeof r->error_code, v, vlen);
    else if (IS("link")) link_next(r->link_next, sizeof r->link_next, v, vlen);
    else if (IS("content-length") || IS("x-linked-size")) {
        set_field(num, sizeof num, v, vlen);
        char *e;
        long long x = strtoll(num, &e, 10);
        if (e != num && *e == 0 && x >= 0) *(IS("content-length") ? &r->content_length : &r->linked_size) = x;
    } else if (IS("retry-after")) {
        set_field(num, sizeof num, v, vlen);
        char *e;
        long x = strtol(num, &e, 10);
        if (e != num && *e == 0 && x >= 0) s->retry_after = x;
        else {
            time_t t = curl_getdate(num, NULL);   // an HTTP date
            if (t > 0) s->retry_after = t > time(NULL) ? (long)(t - time(NULL)) : 0;
        }
    } else if (IS("content-range") && s->file && s->offset > 0) {
        long long start = -1;
        set_field(num, sizeof num, v, vlen);
        if (sscanf(num, "bytes %lld-", &start) != 1 || start != s->offset) s->bad_range = 1;
    }
#undef IS
    return len;
}

static size_t to_memory(req_state *s, const char *data, size_t n, int64_t cap) {
    if ((int64_t)(s->mem_len + n) > cap) {
        s->too_large = 1;
        return 0;
    }
    if (s->mem_len + n + 1 > s->mem_cap) {
        size_t c = s->mem_cap ? s->mem_cap : 4096;
        while (c < s->mem_len + n + 1) c *= 2;
        char *m = realloc(s->mem, c);
        if (!m) return 0;
        s->mem = m;
        s->mem_cap = c;
    }
    memcpy(s->mem + s->mem_len, data, n);
    s->mem_len += n;
    s->mem[s->mem_len] = 0;
    return n;
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *ud) {
    req_state *s = ud;
    size_t n = size * nmemb;
    long code = 0;
    curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &code);
    if (s->body_bytes == 0) s->win_t0 = now_ms();   // the min_rate windows start with the body
    s->body_bytes += (int64_t)n;
    if (!s->file || code < 200 || code >= 300) return to_memory(s, data, n, s->file ? 65536 : s->o->max_body);
    if (!s->body_started) {
        s->body_started = 1;
        if (s->bad_range) return 0;
        if (code != 206 && s->offset > 0) {   // the server ignored Range: start the file again
            if (ftruncate(fileno(s->file), 0) != 0 || fseeko(s->file, 0, SEEK_SET) != 0) return 0;
            s->offset = 0;
        }
        if (s->r->content_length >= 0 && s->offset + s->r->content_length > s->limit) {   // announced too big
            s->file_too_large = 1;
            return 0;
        }
    }
    if (s->offset + s->written + (int64_t)n > s->limit) {   // more than announced, or than max_file
        s->file_too_large = 1;
        return 0;
    }
    if (fwrite(data, 1, n, s->file) != n) return 0;
    s->written += (int64_t)n;
    return n;
}

// Called by libcurl at least once a second: cancellation, the deadline, the wait for a file's
// headers and the minimum rate stop the attempt here (on_done reads s->stopped).
static int on_progress(void *ud, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal, curl_off_t ulnow) {
    req_state *s = ud;
    const ct_http_opts *o = s->o;
    if (ct_ctx_cancelled(o->ctx)) return 1;
    int64_t t = now_ms();
    if (s->deadline > 0 && t >= s->deadline) {
        s->stopped = STOP_DEADLINE;
        return 1;
    }
    if (s->file && !s->body_started && s->body_bytes == 0 && o->timeout_ms > 0 && t - s->t0 >= o->timeout_ms) {
        s->stopped = STOP_HEADERS;
        return 1;
    }
    long win = o->min_rate_window_ms > 0 ? o->min_rate_window_ms : o->timeout_ms;
    if (o->min_rate > 0 && win > 0 && s->body_bytes > 0 && t - s->win_t0 >= win) {
        if ((double)(s->body_bytes - s->win_bytes) < (double)o->min_rate * (double)win / 1000.0) {
            s->stopped = STOP_SLOW;
            return 1;
        }
        s->win_t0 = t;
        s->win_bytes = s->body_bytes;
    }
    if (s->file && s->o->progress && s->body_started)
        s->o->progress(s->o->progress_ud, s->offset + dlnow, dltotal > 0 ? s->offset + dltotal : -1);
    return 0;
}

// ---- attempts ---------------------------------------------------------------

// Whether url lies under prefix (a base URL without trailing slash): it starts with prefix and
// goes on with a path, a query or nothing. "https://host" is no prefix of "https://host.evil/"
// nor of "https://host:80@evil/", nor "http://h:80" of "http://h:8000/".
static int under_prefix(const char *url, const char *prefix) {
    size_t k = strlen(prefix);
    if (k == 0 || strncmp(url, prefix, k) != 0) return 0;
    char c = url[k];
    return c == 0 || c == '/' || c == '?' || c == '#';
}

static ct_status start(req_state *s, CURLM *multi) {
    ct_http_req *r = s->r;
    const ct_http_opts *o = s->o;
    s->mem_len = 0;
    s->body_started = s->too_large = s->file_too_large = s->bad_range = 0;
    s->stopped = STOP_NONE;
    s->retry_after = -1;
    s->errbuf[0] = 0;
    s->offset = s->written = s->body_bytes = s->win_bytes = 0;
    s->t0 = s->win_t0 = now_ms();
    if (s->deadline > 0 && s->t0 >= s->deadline)
        return ct_fail(&r->err, CT_STATUS_TIMEOUT, "%s: not finished within the %ld s allowed", s->url,
                       (o->total_timeout_ms + 999) / 1000);
    s->limit = r->expect_known ? r->expect_size : o->max_file;
    if (r->out_path) {
        if (!(s->file = fopen(r->out_path, "ab")))
            return ct_fail(&r->err, CT_STATUS_IO, "cannot write %s: %s", r->out_path, strerror(errno));
        s->offset = ftello(s->file);
        if (s->offset > s->limit) {   // a partial file longer than the whole: start again
            if (ftruncate(fileno(s->file), 0) != 0 || fseeko(s->file, 0, SEEK_SET) != 0)
                return ct_fail(&r->err, CT_STATUS_IO, "cannot truncate %s: %s", r->out_path, strerror(errno));
            s->offset = 0;
        }
    }
    if (!s->easy && !(s->easy = curl_easy_init())) return ct_fail(&r->err, CT_STATUS_NO_MEMORY, "curl_easy_init failed");
    CURL *e = s->easy;
    curl_easy_reset(e);
    curl_slist_free_all(s->headers);
    s->headers = NULL;
    if (r->auth && r->auth_prefix && under_prefix(s->url, r->auth_prefix))
        s->headers = curl_slist_append(s->headers, r->auth);
    if (r->body) s->headers = curl_slist_append(s->headers, "Content-Type: application/json");
    s->headers = curl_slist_append(s->headers, "Expect:");
    curl_easy_setopt(e, CURLOPT_URL, s->url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, s->headers);
    curl_easy_setopt(e, CURLOPT_USERAGENT, user_agent);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, o->connect_timeout_ms);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, r->out_path ? 0L : o->timeout_ms);   // a file's headers: on_progress
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, s->errbuf);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, s);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, s);
    curl_easy_setopt(e, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(e, CURLOPT_XFERINFODATA, s);
    curl_easy_setopt(e, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(e, CURLOPT_PRIVATE, s);
    const char *m = r->method ? r->method : "GET";
    if (strcmp(m, "HEAD") == 0) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
        curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "identity");   // sizes of the bytes themselves
    } else if (!r->out_path) {
        curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");   // gzip, deflate, br as built
    } else if (s->offset > 0) {
        char range[48];
        snprintf(range, sizeof range, "%lld-", (long long)s->offset);
        curl_easy_setopt(e, CURLOPT_RANGE, range);
    }
    if (strcmp(m, "POST") == 0 || strcmp(m, "PUT") == 0) {   // a body from memory either way
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body ? r->body : "");
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(r->body ? r->body_len : 0));
        if (m[1] == 'U') curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, "PUT");
    } else if (strcmp(m, "GET") != 0 && strcmp(m, "HEAD") != 0) {
        return ct_fail(&r->err, CT_STATUS_BAD_ARG, "HTTP method '%s'; expected GET, POST, PUT or HEAD", m);
    }
    r->attempts++;
    s->state = RUNNING;
    if (curl_multi_add_handle(multi, e) != CURLM_OK) return ct_fail(&r->err, CT_STATUS_NO_MEMORY, "curl_multi_add_handle failed");
    return CT_OK;
}

static void close_file(req_state *s) {
    if (s->file) fclose(s->file);
    s->file = NULL;
}

static void finish(req_state *s, ct_status rc) {
    s->r->rc = rc;
    s->r->err.status = rc;
    s->state = DONE;
}

void ct_http_error_text(const ct_http_req *r, char *out, size_t n) {
    out[0] = 0;
    if (!r->body_out || !r->body_out_len) return;
    cJSON *j = cJSON_ParseWithLength(r->body_out, r->body_out_len);
    const cJSON *e = j ? cJSON_GetObjectItemCaseSensitive(j, "error") : NULL;
    if (!cJSON_IsString(e)) e = j ? cJSON_GetObjectItemCaseSensitive(j, "message") : NULL;
    if (cJSON_IsString(e)) snprintf(out, n, "%s", e->valuestring);
    else {
        size_t k = strcspn(r->body_out, "\r\n");
        if (k > 200) k = 200;
        if (k >= n) k = n - 1;
        for (size_t i = 0; i < k; i++) out[i] = isprint((unsigned char)r->body_out[i]) ? r->body_out[i] : '?';
        out[k] = 0;
    }
    cJSON_Delete(j);
}

// Schedules another attempt after a transient failure, or ends the request with rc if the
// retries are used up. The message in r->err describes the failure either way.
static void retry_or_fail(req_state *s, ct_status rc) {
    const ct_http_opts *o = s->o;
    if (s->tries >= o->max_retries) {
        size_t k = strlen(s->r->err.msg);
        if (s->tries > 0) snprintf(s->r->err.msg + k, sizeof s->r->err.msg - k, " (after %d retries)", s->tries);
        finish(s, rc);
        return;
    }
    long wait;
    if (s->retry_after >= 0) {
        if (s->retry_after * 1000 > o->backoff_max_ms) {
            size_t k = strlen(s->r->err.msg);
            snprintf(s->r->err.msg + k, sizeof s->r->err.msg - k, " (the server asks to wait %ld s)", s->retry_after);
            finish(s, rc);
            return;
        }
        wait = s->retry_after * 1000;
    } else {
        double b = (double)o->backoff_ms * (double)(1L << (s->tries < 20 ? s->tries : 20));
        if (b > (double)o->backoff_max_ms) b = (double)o->backoff_max_ms;
        wait = (long)(b * (0.5 + 0.5 * (double)rand_r(&jitter_seed) / RAND_MAX));   // jitter
    }
    if (s->deadline > 0 && now_ms() + wait >= s->deadline) {
        size_t k = strlen(s->r->err.msg);
        snprintf(s->r->err.msg + k, sizeof s->r->err.msg - k, " (no time left to retry within %ld s)",
                 (o->total_timeout_ms + 999) / 1000);
        finish(s, rc);
        return;
    }
    s->tries++;
    s->not_before = now_ms() + wait;
    s->state = QUEUED;
}

static int is_transient(CURLcode c) {
    return c == CURLE_OPERATION_TIMEDOUT || c == CURLE_RECV_ERROR || c == CURLE_SEND_ERROR ||
           c == CURLE_PARTIAL_FILE || c == CURLE_GOT_NOTHING || c == CURLE_HTTP2 || c == CURLE_HTTP2_STREAM ||
           c == CURLE_BAD_CONTENT_ENCODING;
}

// One attempt ended: decide between done, redirect, retry and failure.
static void on_done(req_state *s, CURLcode c) {
    ct_http_req *r = s->r;
    const ct_http_opts *o = s->o;
    curl_easy_getinfo(s->easy, CURLINFO_RESPONSE_CODE, &r->status);
    close_file(s);
    free(r->body_out);
    r->body_out = s->mem;   // hand the buffer over
    r->body_out_len = s->mem_len;
    s->mem = NULL;
    s->mem_len = s->mem_cap = 0;
    snprintf(r->final_url, sizeof r->final_url, "%s", s->url);
    const char *url = s->url;
    if (ct_ctx_cancelled(o->ctx)) {
        finish(s, ct_fail(&r->err, CT_STATUS_CANCELLED, "request to %s cancelled", url));
        return;
    }
    if (s->stopped == STOP_DEADLINE) {   // the whole request's time is up: no retry
        finish(s, ct_fail(&r->err, CT_STATUS_TIMEOUT, "%s: not finished within the %ld s allowed", url,
                          (o->total_timeout_ms + 999) / 1000));
        return;
    }
    if (s->stopped == STOP_HEADERS) {
        ct_fail(&r->err, CT_STATUS_TIMEOUT, "%s: no response headers within %ld ms", url, o->timeout_ms);
        retry_or_fail(s, CT_STATUS_TIMEOUT);
        return;
    }
    if (s->stopped == STOP_SLOW) {
        long win = o->min_rate_window_ms > 0 ? o->min_rate_window_ms : o->timeout_ms;
        ct_fail(&r->err, CT_STATUS_TIMEOUT, "%s: the body came slower than %lld bytes/s over %ld ms (min_rate)", url,
                (long long)o->min_rate, win);
        retry_or_fail(s, CT_STATUS_TIMEOUT);
        return;
    }
    if (c == CURLE_WRITE_ERROR && s->file_too_large) {   // never keep bytes past the announced size
        if (unlink(r->out_path) != 0 && errno != ENOENT) {
            finish(s, ct_fail(&r->err, CT_STATUS_IO, "cannot delete %s: %s", r->out_path, strerror(errno)));
            return;
        }
        if (r->expect_known)
            finish(s, ct_fail(&r->err, CT_STATUS_TOO_LARGE, "%s sent more than the %lld bytes announced for the file; "
                              "the partial file was deleted", url, (long long)r->expect_size));
        else
            finish(s, ct_fail(&r->err, CT_STATUS_TOO_LARGE, "%s sent more than the %lld-byte limit for a file whose "
                              "size was not announced (max_file); the partial file was deleted", url, (long long)s->limit));
        return;
    }
    if (c == CURLE_WRITE_ERROR && s->too_large) {
        finish(s, ct_fail(&r->err, CT_STATUS_TOO_LARGE, "response from %s is larger than the %lld-byte limit", url,
                          (long long)o->max_body));
        return;
    }
    if (c == CURLE_WRITE_ERROR && s->bad_range) {   // a Content-Range other than the one asked for
        if (truncate(r->out_path, 0) != 0) {
            finish(s, ct_fail(&r->err, CT_STATUS_IO, "cannot truncate %s: %s", r->out_path, strerror(errno)));
            return;
        }
        ct_fail(&r->err, CT_STATUS_BAD_RESPONSE, "%s answered a range request with another range", url);
        retry_or_fail(s, CT_STATUS_BAD_RESPONSE);
        return;
    }
    if (c != CURLE_OK) {
        const char *why = s->errbuf[0] ? s->errbuf : curl_easy_strerror(c);
        if (c == CURLE_OPERATION_TIMEDOUT) {
            ct_fail(&r->err, CT_STATUS_TIMEOUT, "%s: no complete answer within the time limit (%s)", url, why);
            retry_or_fail(s, CT_STATUS_TIMEOUT);
        } else if (is_transient(c)) {
            ct_fail(&r->err, CT_STATUS_NETWORK, "%s: transfer failed (%s)", url, why);
            retry_or_fail(s, CT_STATUS_NETWORK);
        } else if (c == CURLE_WRITE_ERROR && r->out_path) {
            finish(s, ct_fail(&r->err, CT_STATUS_IO, "cannot write %s (%s)", r->out_path, why));
        } else {
            finish(s, ct_fail(&r->err, CT_STATUS_NETWORK, "%s: %s", url, why));
        }
        return;
    }
    long st = r->status;
    if (st >= 300 && st < 400 && r->follow != CT_FOLLOW_NONE) {
        char *next = NULL;
        curl_easy_getinfo(s->easy, CURLINFO_REDIRECT_URL, &next);
        int relative = r->location[0] == '/' && r->location[1] != '/';
        if (next) snprintf(r->location, sizeof r->location, "%s", next);   // absolute from here on
        if (next && (r->follow == CT_FOLLOW_ALL || relative)) {
            if (++s->redirects > o->max_redirects) {
                finish(s, ct_fail(&r->err, CT_STATUS_BAD_RESPONSE, "%s: more than %d redirects (a redirect loop?)",
                                  r->url, o->max_redirects));
                return;
            }
            char *u = strdup(next);
            if (!u) {
                finish(s, ct_fail(&r->err, CT_STATUS_NO_MEMORY, "out of memory"));
                return;
            }
            free(s->url);
            s->url = u;
            s->not_before = 0;
            s->state = QUEUED;
            return;
        }
    }
    if (st == 416 && r->out_path && s->offset > 0) {   // nothing left past our offset: start over
        if (truncate(r->out_path, 0) != 0) {
            finish(s, ct_fail(&r->err, CT_STATUS_IO, "cannot truncate %s: %s", r->out_path, strerror(errno)));
            return;
        }
        ct_fail(&r->err, CT_STATUS_BAD_RESPONSE, "%s refused the range request (416)", url);
        retry_or_fail(s, CT_STATUS_BAD_RESPONSE);
        return;
    }
    if (st >= 200 && st < 400) {
        if (st < 300 && r->accept && strncasecmp(r->content_type, r->accept, strlen(r->accept)) != 0) {
            finish(s, ct_fail(&r->err, CT_STATUS_BAD_RESPONSE, "%s answered with Content-Type '%s'; expected %s", url,
                              r->content_type[0] ? r->content_type : "(none)", r->accept));
            return;
        }
        if (r->out_path && r->content_length >= 0 && st == 200) {   // a complete body of the announced size?
            struct stat sb;
            if (stat(r->out_path, &sb) == 0 && sb.st_size < r->content_length) {
                ct_fail(&r->err, CT_STATUS_NETWORK, "%s: body cut short", url);
                retry_or_fail(s, CT_STATUS_NETWORK);
                return;
            }
        }
        finish(s, CT_OK);
        r->err.msg[0] = 0;
        return;
    }
    char text[256];
    ct_http_error_text(r, text, sizeof text);
    ct_status rc = st == 404 ? CT_STATUS_NOT_FOUND : st == 429 ? CT_STATUS_RATE_LIMITED : CT_STATUS_HTTP;
    ct_fail(&r->err, rc, "HTTP %ld from %s%s%s", st, url, text[0] ? ": " : "", text);
    if (st == 429 || st >= 500) retry_or_fail(s, rc);
    else finish(s, rc);
}

ct_status ct_http_perform(ct_http_req *reqs, int n, const ct_http_opts *opts) {
    pthread_once(&init_once, global_init);
    ct_http_opts o = opts ? *opts : ct_http_defaults();
    if (o.concurrency < 1) o.concurrency = 1;
    if (n <= 0) return CT_OK;
    req_state *st = calloc((size_t)n, sizeof *st);
    CURLM *multi = curl_multi_init();
    if (!st || !multi) {
        free(st);
        if (multi) curl_multi_cleanup(multi);
        for (int i = 0; i < n; i++) reqs[i].rc = ct_fail(&reqs[i].err, CT_STATUS_NO_MEMORY, "out of memory");
        return CT_STATUS_NO_MEMORY;
    }
    curl_multi_setopt(multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)o.concurrency);
    for (int i = 0; i < n; i++) {
        ct_http_req *r = &reqs[i];
        r->status = 0;
        r->attempts = 0;
        r->err.msg[0] = 0;
        r->content_length = r->linked_size = -1;
        st[i] = (req_state){.r = r, .o = &o, .state = QUEUED, .url = strdup(r->url ? r->url : ""),
                            .deadline = o.total_timeout_ms > 0 ? now_ms() + o.total_timeout_ms : 0};
        if (!st[i].url) finish(&st[i], ct_fail(&r->err, CT_STATUS_NO_MEMORY, "out of memory"));
    }
    int remaining = n, running = 0;
    while (remaining > 0) {
        int64_t t = now_ms(), next_wake = t + 100;
        for (int i = 0; i < n && running < o.concurrency; i++) {
            req_state *s = &st[i];
            if (s->state != QUEUED) continue;
            if (s->not_before > t) {
                if (s->not_before < next_wake) next_wake = s->not_before;
                continue;
            }
            ct_status rc = start(s, multi);
            if (rc) {
                close_file(s);
                finish(s, rc);
                remaining--;
            } else {
                running++;
            }
        }
        if (ct_ctx_cancelled(o.ctx)) break;
        int still = 0;
        curl_multi_perform(multi, &still);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(multi, &left))) {
            if (msg->msg != CURLMSG_DONE) continue;
            req_state *s;
            CURL *e = msg->easy_handle;
            CURLcode c = msg->data.result;
            curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&s);
            curl_multi_remove_handle(multi, e);
            running--;
            on_done(s, c);
            if (s->state == DONE) remaining--;
        }
        if (remaining == 0) break;
        for (int i = 0; i < n; i++)   // redirected or retried at once: no need to sleep
            if (st[i].state == QUEUED && st[i].not_before < next_wake) next_wake = st[i].not_before;
        int wait = (int)(next_wake - now_ms());
        if (wait < 1 && running < o.concurrency) continue;
        if (wait < 1) wait = 1;
        if (running > 0) curl_multi_poll(multi, NULL, 0, wait > 100 ? 100 : wait, NULL);
        else usleep((useconds_t)(wait > 100 ? 100 : wait) * 1000);
    }
    ct_status first = CT_OK;
    for (int i = 0; i < n; i++) {
        req_state *s = &st[i];
        if (s->state == RUNNING) curl_multi_remove_handle(multi, s->easy);
        if (s->state != DONE) {
            finish(s, ct_fail(&s->r->err, CT_STATUS_CANCELLED, "request to %s cancelled", s->url));
        }
        close_file(s);
        if (s->easy) curl_easy_cleanup(s->easy);
        curl_slist_free_all(s->headers);
        free(s->mem);
        free(s->url);
        if (!first && s->r->rc) first = s->r->rc;
    }
    curl_multi_cleanup(multi);
    free(st);
    return first;
}

void ct_http_req_free(ct_http_req *r) {
    free(r->body_out);
    r->body_out = NULL;
    r->body_out_len = 0;
}
