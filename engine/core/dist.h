// dist.h - the ranks of an MPI job, or one process.
//
// ctrace runs under MPI's own launchers (mpirun, Slurm's srun) and has no scheduler of its own.
// Built with `make MPI=1` (CT_MPI defined, linked with Open MPI), a process started by a launcher
// (its environment names a rank: OMPI_COMM_WORLD_RANK, PMIX_RANK or PMI_RANK) joins the job in
// ct_dist_init; any other process, and every process of a build without MPI, is rank 0 of 1 and
// calls nothing of MPI. The collectives below are then plain returns. A build without MPI started
// as one of several processes of a job refuses to run (each would do the whole job).
//
//   ct_dist_init(&argc, &argv, &err);   // first thing in main (after any re-exec)
//   ... rank 0 writes the output; every rank computes its share ...
//   ct_dist_finalize(status);      // last: a failure on one rank ends the whole job (MPI_Abort)
#ifndef CT_DIST_H
#define CT_DIST_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

ct_status ct_dist_init(int *argc, char ***argv, ct_err *err);
// status 0: MPI_Finalize; else MPI_Abort(status), which stops every rank within seconds and makes
// the launcher exit non-zero naming this rank.
void ct_dist_finalize(int status);
int ct_dist_rank(void);
int ct_dist_size(void);
// Whether this build can join MPI jobs (make MPI=1).
int ct_dist_built(void);

// buf (bytes) from rank root to every rank.
ct_status ct_dist_bcast(void *buf, size_t bytes, int root, ct_err *err);
// buf (bytes) to rank `to`, or from rank `from` (the sizes agreed beforehand): the layer split's
// pipeline between neighbouring ranks. One process: nothing to send or receive (BAD_ARG).
ct_status ct_dist_send(const void *buf, size_t bytes, int to, ct_err *err);
ct_status ct_dist_recv(void *buf, size_t bytes, int from, ct_err *err);
// Rank r of p's share of L layers under the layer split: [*lo, *hi), consecutive ranges in rank
// order, their sizes differing by at most one (L * r / p .. L * (r + 1) / p).
void ct_layer_share(int L, int r, int p, int *lo, int *hi);
// Rank 0 receives every rank's buffer (n bytes at buf): (*out)[r] (malloc'ed, (*sizes)[r] bytes)
// for each rank r, itself included, both arrays malloc'ed; other ranks get NULL. A collective.
ct_status ct_dist_gather(const void *buf, size_t n, char ***out, size_t **sizes, ct_err *err);
// on 1: this process works alone (ct_dist_size() 1, rank 0: its attributions are not shared) until
// on 0, for work already shared out among the ranks (ct.dist.map). Nested calls count.
void ct_dist_alone(int on);
// A failure of this rank the others cannot learn of (they may wait for it in a collective): msg
// printed as "ctrace [rank N]: msg" and the whole job aborted (MPI_Abort, status 1). One process,
// or a rank working alone: returns.
void ct_dist_abort(const char *msg);
// Whether every rank holds the same value (a checksum of what the ranks must share): CT_OK, else
// CT_STATUS_REMOTE on every rank, naming what differs. A collective.
ct_status ct_dist_same(uint64_t value, const char *what, ct_err *err);
// ctrace run under MPI: the rank is the parent process (it joined the job); its sandboxed
// experiment process, which may open no socket, reaches MPI through it. The experiment process
// calls ct_dist_relay with the parent's rank and size and a transport that hands a request to the
// parent and returns its reply; from then on every function here works through the parent, which
// answers each request with ct_dist_serve (a real MPI call). Requests carry at most
// CT_DIST_RELAY_MAX bytes: larger transfers go in pieces (every rank cuts them alike).
#define CT_DIST_RELAY_MAX (1 << 20)
typedef ct_status (*ct_dist_transport)(const void *req, size_t n, char **reply, size_t *reply_n, ct_err *err);
void ct_dist_relay(int rank, int size, ct_dist_transport send);
// Whether req (n bytes) is a relayed request (then *reply, *reply_n: the malloc'ed answer to send
// back); 0 for any other request.
int ct_dist_serve(const char *req, size_t n, char **reply, size_t *reply_n);
// Every rank learns whether any rank failed: rc when this rank failed, else CT_OK when none did,
// else CT_STATUS_REMOTE naming the highest failing rank (whose own message it prints itself).
// A collective: every rank must reach it.
ct_status ct_dist_agree(ct_status rc, ct_err *err);

#endif
