// dist.c - the ranks of an MPI job, or one process (dist.h).
#include "core/dist.h"

#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/tensor.h"

static int g_rank = 0, g_size = 1, g_alone = 0;
static int g_serving = 0;   // inside ct_dist_serve: the relayed traffic's communicator

// The first of the variables set, as a number; -1 when none is.
static int env_int(const char *const *vars) {
    for (int i = 0; vars[i]; i++) {
        const char *v = getenv(vars[i]);
        if (v && *v) return atoi(v);
    }
    return -1;
}

// One process's gather: its own buffer.
static ct_status gather_self(const void *buf, size_t n, char ***out, size_t **sizes, ct_err *err) {
    *out = malloc(sizeof(char *));
    *sizes = malloc(sizeof(size_t));
    char *c = malloc(n ? n : 1);
    if (!*out || !*sizes || !c) {
        free(*out), free(*sizes), free(c);
        *out = NULL, *sizes = NULL;
        return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory gathering %zu bytes", n);
    }
    if (n) memcpy(c, buf, n);
    (*out)[0] = c, (*sizes)[0] = n;
    return CT_OK;
}

#ifdef CT_MPI
#include <mpi.h>

static int g_mpi = 0;
// The job's communicators: the world, and a duplicate that carries the traffic relayed for ctrace
// run's experiment processes (ct_dist_serve), which can then never match the parents' own calls.
static MPI_Comm g_relayed;
#define COMM (g_serving ? g_relayed : MPI_COMM_WORLD)

// The rank a launcher gave this process in its environment, or -1.
static int launcher_rank(void) { return env_int((const char *const[]){"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", NULL}); }

int ct_dist_built(void) { return 1; }

ct_status ct_dist_init(int *argc, char ***argv, ct_err *err) {
    if (launcher_rank() < 0) return CT_OK;
    int provided;
    if (MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        return ct_fail(err, CT_STATUS_SYSTEM, "started by an MPI launcher (rank %d), but MPI could not start",
                       launcher_rank());
    g_mpi = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    if (MPI_Comm_dup(MPI_COMM_WORLD, &g_relayed) != MPI_SUCCESS)
        return ct_fail(err, CT_STATUS_SYSTEM, "rank %d: MPI could not make a communicator", g_rank);
    // threads, unless OPENBLAS_NUM_THREADS or OMP_NUM_THREADS says: the cores this rank is bound
    // to (mpirun binds ranks to cores, srun to their --cpus-per-task), else the machine's shared
    // among the ranks on it (ctrace.threads(n) sets them later)
    if (getenv("OPENBLAS_NUM_THREADS") || getenv("OMP_NUM_THREADS")) return CT_OK;
    cpu_set_t set;
    long cores = sysconf(_SC_NPROCESSORS_ONLN), bound = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 0;
    const char *local = getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
    if (!local) local = getenv("SLURM_NTASKS_PER_NODE");
    long n = local ? atol(local) : 1;
    if (bound > 0 && bound < cores) ct_set_threads((int)bound);
    else if (n > 1 && cores > 0) ct_set_threads(cores / n > 0 ? (int)(cores / n) : 1);
    return CT_OK;
}

void ct_dist_finalize(int status) {
    if (!g_mpi) return;
    if (status != 0 && g_size > 1) {
        fflush(stdout), fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, status);
    }
    MPI_Finalize();
    g_mpi = 0;
}

static ct_status impl_bcast(void *buf, size_t bytes, int root, ct_err *err) {
    if (ct_dist_size() == 1) return CT_OK;
    // in pieces of at most 1 GiB: MPI counts are ints
    for (size_t at = 0; at < bytes;) {
        size_t n = bytes - at < ((size_t)1 << 30) ? bytes - at : ((size_t)1 << 30);
        if (MPI_Bcast((char *)buf + at, (int)n, MPI_BYTE, root, COMM) != MPI_SUCCESS)
            return ct_fail(err, CT_STATUS_REMOTE, "rank %d: a broadcast from rank %d failed", g_rank, root);
        at += n;
    }
    return CT_OK;
}

// n bytes at p to or from rank peer, in pieces of at most 1 GiB (MPI counts are ints)
static int transfer(void *p, size_t n, int peer, int sending) {
    for (size_t at = 0; at < n;) {
        int k = (int)(n - at < ((size_t)1 << 30) ? n - at : ((size_t)1 << 30));
        MPI_Status st;
        int got = k, rc = sending ? MPI_Send((char *)p + at, k, MPI_BYTE, peer, 7, COMM)
                                  : MPI_Recv((char *)p + at, k, MPI_BYTE, peer, 7, COMM, &st);
        if (rc == MPI_SUCCESS && !sending) MPI_Get_count(&st, MPI_BYTE, &got);
        if (rc != MPI_SUCCESS || got != k) return 0;   // a shorter message than agreed fails too
        at += (size_t)k;
    }
    return 1;
}

static ct_status impl_gather(const void *buf, size_t n, char ***out, size_t **sizes, ct_err *err) {
    *out = NULL, *sizes = NULL;
    if (ct_dist_size() == 1) return gather_self(buf, n, out, sizes, err);
    uint64_t mine = n, *all = g_rank == 0 ? calloc((size_t)g_size, sizeof *all) : NULL;
    int ok = (g_rank != 0 || all) &&
             MPI_Gather(&mine, 1, MPI_UINT64_T, all, 1, MPI_UINT64_T, 0, COMM) == MPI_SUCCESS;
    if (ok && g_rank != 0) return transfer((void *)buf, n, 0, 1) ? CT_OK
                                  : ct_fail(err, CT_STATUS_REMOTE, "rank %d: sending its results failed", g_rank);
    if (ok) {
        *out = calloc((size_t)g_size, sizeof(char *));
        *sizes = calloc((size_t)g_size, sizeof(size_t));
        ok = *out && *sizes;
    }
    for (int r = 0; ok && r < g_size; r++) {
        (*sizes)[r] = (size_t)all[r];
        ok = ((*out)[r] = malloc((size_t)all[r] ? (size_t)all[r] : 1)) != NULL;
        if (ok && r == 0) memcpy((*out)[0], buf, n);
        else if (ok) ok = transfer((*out)[r], (size_t)all[r], r, 0);
    }
    free(all);
    if (ok) return CT_OK;
    for (int r = 0; *out && r < g_size; r++) free((*out)[r]);
    free(*out), free(*sizes);
    *out = NULL, *sizes = NULL;
    return ct_fail(err, CT_STATUS_REMOTE, "rank 0: gathering the ranks' results failed (or out of memory)");
}

static ct_status impl_send(const void *buf, size_t bytes, int to, ct_err *err) {
    if (ct_dist_size() == 1 || to < 0 || to >= g_size || to == g_rank)
        return ct_fail(err, CT_STATUS_BAD_ARG, "rank %d of %d cannot send to rank %d", ct_dist_rank(), ct_dist_size(), to);
    return transfer((void *)buf, bytes, to, 1) ? CT_OK
           : ct_fail(err, CT_STATUS_REMOTE, "rank %d: sending %zu bytes to rank %d failed", g_rank, bytes, to);
}

static ct_status impl_recv(void *buf, size_t bytes, int from, ct_err *err) {
    if (ct_dist_size() == 1 || from < 0 || from >= g_size || from == g_rank)
        return ct_fail(err, CT_STATUS_BAD_ARG, "rank %d of %d cannot receive from rank %d", ct_dist_rank(), ct_dist_size(), from);
    return transfer(buf, bytes, from, 0) ? CT_OK
           : ct_fail(err, CT_STATUS_REMOTE, "rank %d: receiving %zu bytes from rank %d failed", g_rank, bytes, from);
}

static void impl_abort(const char *msg) {
    if (ct_dist_size() == 1) return;
    fprintf(stderr, "ctrace [rank %d]: %s\n", g_rank, msg);
    fflush(stdout), fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
}

static ct_status impl_same(uint64_t value, const char *what, ct_err *err) {
    if (ct_dist_size() == 1) return CT_OK;
    uint64_t lo = 0, hi = 0;
    if (MPI_Allreduce(&value, &lo, 1, MPI_UINT64_T, MPI_MIN, COMM) != MPI_SUCCESS ||
        MPI_Allreduce(&value, &hi, 1, MPI_UINT64_T, MPI_MAX, COMM) != MPI_SUCCESS)
        return ct_fail(err, CT_STATUS_REMOTE, "rank %d: the ranks could not compare their %s", g_rank, what);
    if (lo != hi)
        return ct_fail(err, CT_STATUS_REMOTE, "the ranks' %s differ: the ranks must run the same model, transcoders and "
                       "prompt with the same arithmetic (identical CPUs and BLAS kernels)", what);
    return CT_OK;
}

static ct_status impl_agree(ct_status rc, ct_err *err) {
    if (ct_dist_size() == 1) return rc;
    int mine = rc ? g_rank + 1 : 0, worst = 0;
    if (MPI_Allreduce(&mine, &worst, 1, MPI_INT, MPI_MAX, COMM) != MPI_SUCCESS && !rc)
        return ct_fail(err, CT_STATUS_REMOTE, "rank %d: the ranks could not agree", g_rank);
    if (rc || !worst) return rc;
    return ct_fail(err, CT_STATUS_REMOTE, "rank %d failed (its message is above)", worst - 1);
}

#else

// The job's size a launcher gave this process in its environment (mpirun; srun with PMI-2; srun's
// tasks in a step with any plugin: SLURM_STEP_NUM_TASKS), or -1.
static int launcher_size(void) {
    return env_int((const char *const[]){"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_STEP_NUM_TASKS", NULL});
}

int ct_dist_built(void) { return 0; }

ct_status ct_dist_init(int *argc, char ***argv, ct_err *err) {
    (void)argc, (void)argv;
    if (launcher_size() > 1)   // every process would do the whole job and write the same files
        return ct_fail(err, CT_STATUS_UNSUPPORTED, "started as one of %d processes of an MPI job, but this ctrace was "
                       "built without MPI: build it with make MPI=1 (build/mpi/ctrace)", launcher_size());
    return CT_OK;
}

void ct_dist_finalize(int status) { (void)status; }

static ct_status impl_bcast(void *buf, size_t bytes, int root, ct_err *err) {
    (void)buf, (void)bytes, (void)root, (void)err;
    return CT_OK;
}

static ct_status impl_agree(ct_status rc, ct_err *err) {
    (void)err;
    return rc;
}

static ct_status impl_gather(const void *buf, size_t n, char ***out, size_t **sizes, ct_err *err) {
    return gather_self(buf, n, out, sizes, err);
}

static ct_status impl_send(const void *buf, size_t bytes, int to, ct_err *err) {
    (void)buf, (void)bytes;
    return ct_fail(err, CT_STATUS_BAD_ARG, "one process cannot send to rank %d", to);
}

static ct_status impl_recv(void *buf, size_t bytes, int from, ct_err *err) {
    (void)buf, (void)bytes;
    return ct_fail(err, CT_STATUS_BAD_ARG, "one process cannot receive from rank %d", from);
}

static void impl_abort(const char *msg) { (void)msg; }

static ct_status impl_same(uint64_t value, const char *what, ct_err *err) {
    (void)value, (void)what, (void)err;
    return CT_OK;
}

#endif

void ct_layer_share(int L, int r, int p, int *lo, int *hi) {
    *lo = (int)((int64_t)L * r / p);
    *hi = (int)((int64_t)L * (r + 1) / p);
}

// ---------------------------------------------------------------------------------------------
// The relay: ctrace run's experiment process reaches MPI through its parent (dist.h)

static ct_dist_transport g_send;   // set in the experiment process of a ctrace run under MPI

enum { OP_BCAST = 1, OP_SEND, OP_RECV, OP_SAME, OP_AGREE };
static const char MAGIC[4] = {'C', 'T', 'D', '1'};

typedef struct {   // a request: this header (32 bytes, no padding), then its data
    char magic[4];
    int32_t op, peer, reserved;   // reserved: 0
    uint64_t value, n;
} relay_req;

typedef struct {   // a reply: this header, then data or, on failure, the message
    int32_t status;
} relay_reply;

#define PIECE (CT_DIST_RELAY_MAX - (int)sizeof(relay_req))

void ct_dist_relay(int rank, int size, ct_dist_transport send) {
    g_rank = rank, g_size = size, g_send = send;
}

// One request to the parent: op with data in (n_in bytes); the reply's data into out (n_out bytes).
static ct_status relay(int op, int peer, uint64_t value, const void *in, size_t n_in, void *out, size_t n_out,
                       ct_err *err) {
    char *req = malloc(sizeof(relay_req) + n_in + 1), *rep = NULL;
    if (!req) return ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory relaying %zu bytes", n_in);
    relay_req h;
    memset(&h, 0, sizeof h);
    memcpy(h.magic, MAGIC, 4);
    h.op = op, h.peer = peer, h.value = value, h.n = n_in;
    memcpy(req, &h, sizeof h);
    if (n_in) memcpy(req + sizeof h, in, n_in);
    size_t rn = 0;
    ct_status rc = g_send(req, sizeof h + n_in, &rep, &rn, err);
    free(req);
    if (rc) return rc;
    relay_reply r = {0};
    if (rn < sizeof r) rc = ct_fail(err, CT_STATUS_BAD_RESPONSE, "rank %d: a malformed answer from ctrace run", g_rank);
    else memcpy(&r, rep, sizeof r);
    if (!rc && r.status)
        rc = ct_fail(err, (ct_status)r.status, "%.*s", (int)(rn - sizeof r < 400 ? rn - sizeof r : 400), rep + sizeof r);
    else if (!rc && out && rn - sizeof r != n_out)
        rc = ct_fail(err, CT_STATUS_BAD_RESPONSE, "rank %d: ctrace run answered %zu bytes for %zu", g_rank, rn - sizeof r, n_out);
    if (!rc && out) memcpy(out, rep + sizeof r, n_out);
    free(rep);
    return rc;
}

// op over n bytes at buf, a piece at a time: data goes up when this rank gives it (up), comes back
// into buf when it receives (down).
static ct_status relay_pieces(int op, int peer, void *buf, size_t n, int up, int down, ct_err *err) {
    ct_status rc = CT_OK;
    for (size_t at = 0; at < n && !rc; at += PIECE) {
        size_t k = n - at < (size_t)PIECE ? n - at : (size_t)PIECE;
        rc = relay(op, peer, k, up ? (char *)buf + at : NULL, up ? k : 0, down ? (char *)buf + at : NULL, down ? k : 0, err);
    }
    return rc;
}

static ct_status relay_gather(const void *buf, size_t n, char ***out, size_t **sizes, ct_err *err) {
    uint64_t mine = n;
    *out = NULL, *sizes = NULL;
    if (g_rank != 0) {
        ct_status rc = relay_pieces(OP_SEND, 0, &mine, sizeof mine, 1, 0, err);
        return rc ? rc : relay_pieces(OP_SEND, 0, (void *)buf, n, 1, 0, err);
    }
    *out = calloc((size_t)g_size, sizeof(char *));
    *sizes = calloc((size_t)g_size, sizeof(size_t));
    ct_status rc = *out && *sizes ? CT_OK : ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory gathering");
    for (int r = 0; r < g_size && !rc; r++) {
        uint64_t k = n;
        if (r > 0) rc = relay_pieces(OP_RECV, r, &k, sizeof k, 0, 1, err);
        if (!rc && !((*out)[r] = malloc(k ? (size_t)k : 1))) rc = ct_fail(err, CT_STATUS_NO_MEMORY, "out of memory gathering");
        if (!rc) (*sizes)[r] = (size_t)k;
        if (!rc && r == 0 && n) memcpy((*out)[0], buf, n);
        if (!rc && r > 0) rc = relay_pieces(OP_RECV, r, (*out)[r], (size_t)k, 0, 1, err);
    }
    if (rc) {
        for (int r = 0; *out && r < g_size; r++) free((*out)[r]);
        free(*out), free(*sizes);
        *out = NULL, *sizes = NULL;
    }
    return rc;
}

int ct_dist_serve(const char *req, size_t n, char **reply, size_t *reply_n) {
    relay_req h;
    if (n < sizeof h || memcmp(req, MAGIC, 4) != 0) return 0;
    memcpy(&h, req, sizeof h);
    const char *data = req + sizeof h;
    size_t dn = n - sizeof h, out_n = 0;
    ct_err err = {0};
    ct_status rc = dn == h.n ? CT_OK : ct_fail(&err, CT_STATUS_BAD_ARG, "a relayed request of %zu bytes says %llu", dn,
                                                (unsigned long long)h.n);
    char *out = NULL;
    if (!rc && (h.peer < 0 || h.peer >= g_size))
        rc = ct_fail(&err, CT_STATUS_BAD_ARG, "a relayed request names rank %d of %d", h.peer, g_size);
    g_serving = 1;   // the calls below travel on the relayed traffic's communicator
    if (!rc && (h.op == OP_BCAST || h.op == OP_RECV)) {   // h.value bytes come back
        if (h.value > (uint64_t)PIECE || !(out = calloc((size_t)h.value + 1, 1)))
            rc = ct_fail(&err, CT_STATUS_BAD_ARG, "a relayed transfer of %llu bytes", (unsigned long long)h.value);
        if (!rc && h.op == OP_BCAST && h.peer == ct_dist_rank()) {
            if (dn != h.value) rc = ct_fail(&err, CT_STATUS_BAD_ARG, "a relayed broadcast without its data");
            else memcpy(out, data, dn);
        }
        if (!rc) rc = h.op == OP_BCAST ? impl_bcast(out, (size_t)h.value, h.peer, &err)
                                       : impl_recv(out, (size_t)h.value, h.peer, &err);
        out_n = rc ? 0 : (size_t)h.value;   // the root's own data too: every rank gets its piece back
    } else if (!rc && h.op == OP_SEND) {
        rc = impl_send(data, dn, h.peer, &err);
    } else if (!rc && h.op == OP_SAME) {
        char what[256];
        snprintf(what, sizeof what, "%.*s", (int)(dn < 255 ? dn : 255), data);
        rc = impl_same(h.value, what, &err);
    } else if (!rc && h.op == OP_AGREE) {
        rc = impl_agree((ct_status)h.value, &err);
    } else if (!rc) {
        rc = ct_fail(&err, CT_STATUS_BAD_ARG, "a relayed request of unknown kind %d", h.op);
    }
    g_serving = 0;
    const char *body = rc ? err.msg : out;
    size_t body_n = rc ? strlen(err.msg) : out_n;
    relay_reply r = {.status = rc};
    *reply = malloc(sizeof r + body_n + 1);
    *reply_n = *reply ? sizeof r + body_n : 0;
    if (*reply) {
        memcpy(*reply, &r, sizeof r);
        if (body_n) memcpy(*reply + sizeof r, body, body_n);
    }
    free(out);
    return 1;
}

// ---------------------------------------------------------------------------------------------
// The calls: through the relay in ctrace run's experiment process, else MPI (or one process)

static int relayed(void) { return g_send && ct_dist_size() > 1; }

ct_status ct_dist_bcast(void *buf, size_t bytes, int root, ct_err *err) {
    if (relayed()) return relay_pieces(OP_BCAST, root, buf, bytes, g_rank == root, 1, err);
    return impl_bcast(buf, bytes, root, err);
}

ct_status ct_dist_send(const void *buf, size_t bytes, int to, ct_err *err) {
    if (relayed()) return relay_pieces(OP_SEND, to, (void *)buf, bytes, 1, 0, err);
    return impl_send(buf, bytes, to, err);
}

ct_status ct_dist_recv(void *buf, size_t bytes, int from, ct_err *err) {
    if (relayed()) return relay_pieces(OP_RECV, from, buf, bytes, 0, 1, err);
    return impl_recv(buf, bytes, from, err);
}

ct_status ct_dist_gather(const void *buf, size_t n, char ***out, size_t **sizes, ct_err *err) {
    if (relayed()) return relay_gather(buf, n, out, sizes, err);
    return impl_gather(buf, n, out, sizes, err);
}

ct_status ct_dist_same(uint64_t value, const char *what, ct_err *err) {
    if (relayed()) return relay(OP_SAME, 0, value, what, strlen(what), NULL, 0, err);
    return impl_same(value, what, err);
}

ct_status ct_dist_agree(ct_status rc, ct_err *err) {
    if (!relayed()) return impl_agree(rc, err);
    ct_err mine = *err;   // this rank's own failure keeps its message
    ct_status all = relay(OP_AGREE, 0, (uint64_t)rc, NULL, 0, NULL, 0, err);
    if (rc) *err = mine;
    return rc ? rc : all;
}

void ct_dist_abort(const char *msg) {
    if (!relayed()) {
        impl_abort(msg);
        return;
    }
    // the parent, seeing this process fail, ends the job
    fprintf(stderr, "ctrace [rank %d]: %s\n", g_rank, msg);
    fflush(stdout), fflush(stderr);
    _exit(1);
}

int ct_dist_rank(void) { return g_alone ? 0 : g_rank; }
int ct_dist_size(void) { return g_alone ? 1 : g_size; }
void ct_dist_alone(int on) { g_alone += on ? 1 : (g_alone > 0 ? -1 : 0); }
