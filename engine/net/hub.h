// hub.h - files from Hugging Face repositories, in the standard hub cache.
//
// The cache layout is huggingface_hub's, so files either side downloaded are shared:
//   <cache>/models--{org}--{name}/blobs/<etag>              the bytes
//   <cache>/models--{org}--{name}/snapshots/<commit>/<path> symlink to ../../blobs/<etag>
//   <cache>/models--{org}--{name}/refs/<revision>           the commit a branch or tag pointed to
//   <cache>/.locks/models--{org}--{name}/<etag>.lock         held while downloading
// <cache> = $HF_HUB_CACHE, else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else
// ~/.cache/huggingface/hub. Endpoint = $HF_ENDPOINT or https://huggingface.co; $HF_TOKEN is
// sent (Authorization: Bearer) to the endpoint only, never to the servers it redirects to.
//
// Fetching asks the endpoint for the file's commit, ETag and size (HEAD on
// {endpoint}/{repo}/resolve/{revision}/{path}), reuses the blob if present, else downloads it
// to blobs/<etag>.incomplete (resuming what a previous attempt left, with Range), checks the
// size and the hash the ETag names (sha256 for LFS files, the git blob sha1 otherwise), and
// renames it into place. A failed check deletes the partial file, and so does a body longer than
// the size announced (Content-Length, X-Linked-Size) or, when none was, than http.max_file: the
// transfer stops at the first byte too many. http.total_timeout_ms (file_timeout) bounds one
// file as a whole: the HEAD, the wait for another process's lock, the download and its retries.
// When the endpoint cannot be
// reached the cached snapshot is used; in offline mode ($HF_HUB_OFFLINE or $CTRACE_OFFLINE)
// the network is never touched.
//
// A snapshot is the set of files of one folder of a repository, at one commit, that match
// patterns (ct_hub_snapshot; what huggingface_hub's snapshot_download does with allow_patterns):
//   1. the commit: GET {endpoint}/api/models/{repo}/revision/{revision} (huggingface_hub's
//      repo_info) answers "sha" and "siblings" (every file of the repository); a revision that is
//      already a commit needs no request when the folder's listing is known;
//   2. the folder's listing, the first found of: ctrace's record of it
//      (<cache>/models--{org}--{name}/ctrace-listings/<commit>/folder-<folder>.json), huggingface_hub's
//      own (trees/<commit>.json), the siblings when the answer holds 1..1000 of them, else the tree
//      endpoint GET {endpoint}/api/models/{repo}/tree/{commit}[/{folder}] (not recursive, pages
//      followed through the Link header); a listing fetched is recorded;
//   3. refs/<revision> records the commit; every file that matches is fetched at the commit as
//      above (ct_hub_file), into snapshots/<commit>/. Within a download budget the announced sizes
//      of the missing files are added up first, and a snapshot larger than the budget is refused
//      before any byte is downloaded.
// Offline (or with the endpoint unreachable) the commit comes from refs/<revision> and every file
// the recorded listing matches must be in the snapshot (else OFFLINE naming the missing files);
// without a listing, the files of the snapshot's folder that match are used.
// What the server says is checked: the commit is 40 hexadecimal digits, each listed name a
// relative path without '.', '..' or control characters inside the folder asked for, at most
// CT_HUB_LISTING_MAX entries over at most CT_HUB_LISTING_PAGES pages whose next address continues
// the endpoint's tree address, at most CT_HUB_SNAPSHOT_MAX files matched; a file fetched at a
// commit must come back with that commit (X-Repo-Commit). Anything else is BAD_RESPONSE or
// TOO_LARGE naming what was expected and what was found; nothing is written outside the cache.
#ifndef CT_HUB_H
#define CT_HUB_H

#include <stddef.h>

#include "net/http.h"
#include "core/status.h"

typedef struct {
    char endpoint[512];
    char cache[1024];
    char auth[600];         // "Authorization: Bearer <HF_TOKEN>" or ""
    int offline;
    int progress;           // draw a progress bar on stderr
    ct_http_opts http;
    int requests;           // HTTP requests made
    int64_t budget;         // bytes files may still download (a ctrace run's limit); -1: no limit
} ct_hub;

// Settings from the environment.
void ct_hub_init(ct_hub *h);

// Splits "hf://org/name/path/in/repo?revision=rev" (or "org/name" with path "" when allow_no_path)
// into repo "org/name", path and revision (default "main"). Validates every part.
ct_status ct_hub_parse_uri(const char *uri, char repo[256], char path[1024], char rev[256], ct_err *err);

// The local path of repo/path at revision, downloading it if needed.
ct_status ct_hub_file(ct_hub *h, const char *repo, const char *path, const char *rev, char *out, size_t n,
                      ct_err *err);
// Same for an hf:// URI.
ct_status ct_hub_uri(ct_hub *h, const char *uri, char *out, size_t n, ct_err *err);

// The cached path of repo/path at revision without any network access, or NOT_FOUND.
ct_status ct_hub_cached(const ct_hub *h, const char *repo, const char *path, const char *rev, char *out, size_t n,
                        ct_err *err);

// ---- snapshots -------------------------------------------------------------------------------

#define CT_HUB_SIBLINGS_TRUSTED 1000   // siblings beyond this are not trusted (huggingface_hub's LARGE_REPO_THRESHOLD)
#define CT_HUB_LISTING_MAX 100000      // entries of one folder's listing
#define CT_HUB_LISTING_PAGES 1000      // pages of one folder's listing
#define CT_HUB_SNAPSHOT_MAX 4096       // files one snapshot may match
#define CT_HUB_PATTERNS_MAX 64

typedef struct {
    char **v;   // (n,) malloc'ed strings
    int n, cap;
} ct_hub_names;

void ct_hub_names_free(ct_hub_names *s);

typedef struct {
    char commit[41];
    char dir[1500];   // <cache>/models--{org}--{name}/snapshots/<commit>
    int n;            // files matched
    char **files;     // (n,) their paths in the repository, sorted (bytewise)
} ct_hub_snap;

// The files of repo at revision rev matching patterns (n_patterns of them), in the cache. A
// pattern is a path in the repository whose last segment may hold fnmatch(3) wildcards (*, ?,
// [...]; a backslash escapes one): "config.yaml", "sub/dir/layer_*.safetensors". The folders
// before it are literal. No file matching is not an error (out->n == 0). Free out with
// ct_hub_snap_free.
ct_status ct_hub_snapshot(ct_hub *h, const char *repo, const char *rev, const char *const *patterns, int n_patterns,
                          ct_hub_snap *out, ct_err *err);
void ct_hub_snap_free(ct_hub_snap *s);

// The readers of the server's answers (exposed for the fuzzer). what names the request in errors.
// The revision endpoint's answer: its commit, and in *siblings the repository's files when the
// answer lists 1..CT_HUB_SIBLINGS_TRUSTED of them (*trusted = 1), else *trusted = 0.
ct_status ct_hub_parse_revision(const char *json, size_t n, const char *what, char sha[41], ct_hub_names *siblings,
                                int *trusted, ct_err *err);
// One page of the tree endpoint's listing of folder ("" = the repository's root): the names of
// the files directly in it appended to *files; *entries counts every entry of the page.
ct_status ct_hub_parse_tree(const char *json, size_t n, const char *what, const char *folder, ct_hub_names *files,
                            int *entries, ct_err *err);

#endif
