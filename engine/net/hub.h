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

#endif
