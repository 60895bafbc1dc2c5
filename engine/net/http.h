// http.h - HTTP requests over libcurl: timeouts, a minimum transfer rate, an overall deadline,
// bounded retries with backoff, redirects that keep credentials on their own server, size caps
// (in memory and on disk), resumable downloads to files, many requests at once with bounded
// concurrency, cancellation (the context in the options).
//
//   ct_http_req r = {.method = "GET", .url = "https://...", .accept = "application/json"};
//   ct_status rc = ct_http_perform(&r, 1, &opts);   // r.status, r.body, r.err
//   ct_http_req_free(&r);
//
// Retried (up to opts.max_retries times, waiting backoff_ms * 2^attempt scaled by a random factor
// in [0.5, 1], at most backoff_max_ms, or the server's Retry-After): timeouts, connections reset
// or cut short, 429 and 5xx. Not retried: an unreachable host (NETWORK at once), other 4xx, a
// body over the cap, a file over its size, a wrong content type, the deadline. Proxies come from the environment (libcurl reads
// http_proxy, https_proxy, no_proxy); TLS peers are verified.
//
// Time limits. timeout_ms bounds every attempt of a request kept in memory, whole; for a
// download to a file it bounds the wait for the response's headers (a file of gigabytes takes
// as long as it takes while bytes flow). min_rate applies to every body once it starts: each
// window of min_rate_window_ms must bring at least min_rate bytes per second, else the attempt
// is abandoned as a timeout (and retried; a file resumes). total_timeout_ms bounds the whole
// ct_http_perform call, every attempt and every wait between them: past it, TIMEOUT, no retry.
//
// Sizes. A body kept in memory may hold max_body bytes. A file may hold the size the caller
// says was announced (ct_http_req.expect_size), else max_file bytes, and never more than the
// Content-Length of the response: one byte more aborts the transfer (TOO_LARGE, not retried)
// and deletes the file.
#ifndef CT_HTTP_H
#define CT_HTTP_H

#include <stdint.h>
#include <stdio.h>

#include "core/ctx.h"
#include "core/status.h"

typedef struct {
    long connect_timeout_ms;   // per attempt, default 10000
    long timeout_ms;           // an attempt (in memory) or its headers (to a file), default 60000; 0 = none
    int64_t min_rate;          // bytes/s a body must average over each window, default 1024; 0 = none
    long min_rate_window_ms;   // that window, default 0 = timeout_ms (a body may pause that long)
    long total_timeout_ms;     // the whole ct_http_perform call, retries included, default 0 = none
    int max_retries;           // default 4
    long backoff_ms;           // first retry delay, default 1000
    long backoff_max_ms;       // longest wait, default 60000; a longer Retry-After fails at once
    int64_t max_body;          // cap on a body kept in memory, default 64 MiB
    int64_t max_file;          // cap on a file whose size was not announced, default 64 GiB
    int max_redirects;         // default 10
    int concurrency;           // requests in flight in ct_http_perform, default 8
    // Called during file downloads with bytes on disk and the expected total (-1 unknown).
    void (*progress)(void *ud, int64_t done, int64_t total);
    void *progress_ud;
    const ct_ctx *ctx;         // its cancellation and deadline stop transfers (may be NULL)
} ct_http_opts;

// Defaults above.
ct_http_opts ct_http_defaults(void);

enum { CT_FOLLOW_ALL = 0, CT_FOLLOW_NONE = 1, CT_FOLLOW_RELATIVE = 2 };

typedef struct {
    // ---- request (set by the caller) ----
    const char *method;        // "GET" (default), "POST", "PUT", "HEAD"
    const char *url;
    const char *body;          // POST or PUT body (JSON), body_len bytes
    size_t body_len;
    const char *auth;          // a header line such as "x-api-key: K", or NULL
    const char *auth_prefix;   // auth is sent only while the URL starts with this
    const char *accept;        // required Content-Type prefix of a 2xx body, or NULL
    const char *out_path;      // write the body to this file, resuming from its size with Range
    int expect_known;          // with out_path: the file's size was announced beforehand:
    int64_t expect_size;       //   expect_size bytes, the most it may hold (else opts.max_file)
    int follow;                // CT_FOLLOW_*: redirects followed, none, or only same-server paths
    // ---- response ----
    long status;               // last HTTP status (0: no response)
    char *body_out;            // body kept in memory (NUL-terminated; NULL with out_path)
    size_t body_out_len;
    char content_type[128];
    char etag[160], linked_etag[160], repo_commit[64], location[1024], error_code[64];
    int64_t content_length, linked_size;   // -1 when absent
    char link_next[2048];      // the Link header's rel="next" URL (a paginated API), "" if none,
                               //   "-" if longer than this field
    char final_url[2048];      // URL of the last request (after redirects)
    int attempts;              // requests made, retries and redirects included
    ct_status rc;
    ct_err err;
    void *priv;                // internal
} ct_http_req;

// Performs n requests, at most opts->concurrency at a time. Returns CT_OK when every request
// ended with a 2xx (or a 3xx where follow says not to follow); otherwise the first failing
// request's status, with each request's own rc and err set. CANCELLED when opts->ctx is
// cancelled: transfers stop, a partial download file stays for the next attempt to resume.
ct_status ct_http_perform(ct_http_req *reqs, int n, const ct_http_opts *opts);
void ct_http_req_free(ct_http_req *r);

// Appends s to buf (cap bytes, NUL-terminated) escaped for a URL path segment (RFC 3986
// unreserved characters kept; with keep_slash, '/' kept too). Returns 0, or -1 if it did not fit.
int ct_url_escape(char *buf, size_t cap, const char *s, int keep_slash);

// Copies url into dst (n bytes) without trailing slashes: a base to append "/path" to.
void ct_url_base(char *dst, size_t n, const char *url);

// The text of a JSON error body's "error" field, else "message", else the body's first line
// (at most 200 bytes), into out.
void ct_http_error_text(const ct_http_req *r, char *out, size_t n);

// The user agent sent with every request ("ctrace/<version> libcurl/<version>").
const char *ct_http_user_agent(void);

#endif
