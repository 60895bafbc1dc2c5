// dist.c - the ranks of an MPI job, or one process (dist.h).
#include "core/dist.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "core/tensor.h"

static int g_rank = 0, g_size = 1;

// The first of the variables set, as a number; -1 when none is.
static int env_int(const char *const *vars) {
    for (int i = 0; vars[i]; i++) {
        const char *v = getenv(vars[i]);
        if (v && *v) return atoi(v);
    }
    return -1;
}



#ifdef CT_MPI
#include <mpi.h>

static int g_mpi = 0;

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
    // threads: Slurm's cores per task, else the machine's cores shared among the ranks on it
    // (ctrace.threads(n) sets them later)
    const char *per_task = getenv("SLURM_CPUS_PER_TASK"), *local = getenv("OMPI_COMM_WORLD_LOCAL_SIZE");
    if (!local) local = getenv("SLURM_NTASKS_PER_NODE");
    long cores = sysconf(_SC_NPROCESSORS_ONLN), n = local ? atol(local) : 1;
    if (per_task && atoi(per_task) > 0) ct_set_threads(atoi(per_task));
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

ct_status ct_dist_bcast(void *buf, size_t bytes, int root, ct_err *err) {
    if (g_size == 1) return CT_OK;
    // in pieces of at most 1 GiB: MPI counts are ints
    for (size_t at = 0; at < bytes;) {
        size_t n = bytes - at < ((size_t)1 << 30) ? bytes - at : ((size_t)1 << 30);
        if (MPI_Bcast((char *)buf + at, (int)n, MPI_BYTE, root, MPI_COMM_WORLD) != MPI_SUCCESS)
            return ct_fail(err, CT_STATUS_REMOTE, "rank %d: a broadcast from rank %d failed", g_rank, root);
        at += n;
    }
    return CT_OK;
}

ct_status ct_dist_agree(ct_status rc, ct_err *err) {
    if (g_size == 1) return rc;
    int mine = rc ? g_rank + 1 : 0, worst = 0;
    if (MPI_Allreduce(&mine, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD) != MPI_SUCCESS && !rc)
        return ct_fail(err, CT_STATUS_REMOTE, "rank %d: the ranks could not agree", g_rank);
    if (rc || !worst) return rc;
    return ct_fail(err, CT_STATUS_REMOTE, "rank %d failed (its message is above)", worst - 1);
}

#else

// The job's size a launcher gave this process in its environment (mpirun; srun with PMI-2), or -1.
static int launcher_size(void) { return env_int((const char *const[]){"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", NULL}); }

int ct_dist_built(void) { return 0; }

ct_status ct_dist_init(int *argc, char ***argv, ct_err *err) {
    (void)argc, (void)argv;
    if (launcher_size() > 1)   // every process would do the whole job and write the same files
        return ct_fail(err, CT_STATUS_UNSUPPORTED, "started as one of %d processes of an MPI job, but this ctrace was "
                       "built without MPI: build it with make MPI=1 (build/mpi/ctrace)", launcher_size());
    return CT_OK;
}

void ct_dist_finalize(int status) { (void)status; }

ct_status ct_dist_bcast(void *buf, size_t bytes, int root, ct_err *err) {
    (void)buf, (void)bytes, (void)root, (void)err;
    return CT_OK;
}

ct_status ct_dist_agree(ct_status rc, ct_err *err) {
    (void)err;
    return rc;
}

#endif

int ct_dist_rank(void) { return g_rank; }
int ct_dist_size(void) { return g_size; }
