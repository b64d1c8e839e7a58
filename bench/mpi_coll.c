/* mpi_coll.c - MPI collective micro-benchmark: MPI_Allreduce (float sum),
 * MPI_Reduce_scatter_block (float sum), MPI_Allgather, MPI_Alltoall and
 * MPI_Alltoallv, message sizes n from 8 B to 16 MiB, the median time of each,
 * and a fitted latency alpha (us) and bandwidth beta (GB/s) per collective.
 *
 * Build and run: bench/mpi_coll.sh [np] [extra mpirun flags]  (mpicc -O2; mpirun)
 * Usage: mpi_coll [max_bytes (16777216)] [step (2: every power of 2; 4: of 4)]
 *
 * n is the size of the whole vector a collective works on, per rank:
 *   allreduce        each rank reduces n bytes (n/4 floats); result n bytes
 *   reduce_scatter   each rank contributes n bytes, receives n/p (MPI_Reduce_scatter_block)
 *   allgather        each rank contributes n/p bytes, receives n (the gathered vector)
 *   alltoall         each rank sends n bytes in all, n/p to every rank (itself too)
 *   alltoallv        each rank sends n bytes in all, uneven: to rank j a share
 *                    (1 + (r + j) mod p) / sum, as an MoE dispatch with skewed
 *                    routing; every rank still receives n in all
 * When n/p (or n/(4p) floats) is below one element the element count is
 * rounded up; the bytes printed are the ones moved.
 *
 * Cost models (Thakur, Rabenseifner & Gropp, "Optimization of Collective
 * Communication Operations in MPICH", IJHPCA 2005; reduction compute ignored):
 *   allreduce (ring: reduce-scatter + allgather)  2(p-1) alpha + 2(p-1)/p * n / beta
 *   reduce_scatter (ring / pairwise)               (p-1) alpha +  (p-1)/p * n / beta
 *   allgather (ring)                               (p-1) alpha +  (p-1)/p * n / beta
 *   alltoall (pairwise exchange)                   (p-1) alpha +  (p-1)/p * n / beta
 *   alltoallv (pairwise)                           (p-1) alpha +  max_r(bytes r sends off-rank) / beta
 * i.e. t = L * alpha + X(n) / beta with L latency terms and X(n) the bytes the
 * busiest rank puts on the wire. The fit is a least-squares line t = c0 + c1 X
 * weighted by 1/t^2 (relative error, so the small sizes fix alpha and the
 * large ones beta): alpha = c0 / L, beta = 1 / c1. The MPI library may pick
 * other algorithms (e.g. recursive doubling, log2 p latency terms, for small
 * allreduces): alpha is then the effective per-term latency under the formula
 * above, and "busbw" = X(n) / t is the bandwidth the formula sees at each size.
 *
 * Timing: per size, a few warm-ups, then R repetitions of (barrier, t0, call,
 * t1); each repetition's time is the max over ranks (an MPI_Allreduce MAX of
 * the time vector afterwards), the median of those is printed. R = clamp(2^26 /
 * n, 11, 1001) (odd, so the median is one sample).
 *
 * Output: a table (us per call, per size) on stdout, then machine-readable lines:
 *   coll name=NAME p=P bytes=N wire_bytes=X us=T busbw_GBps=B reps=R
 *   fit name=NAME p=P alpha_us=A beta_GBps=B lat_terms=L max_rel_err=E sizes=K
 *       split_alpha_us=A2 split_beta_GBps=B2
 * The split fit takes alpha from the sizes <= 4 KiB only and beta from the
 * slope over the sizes >= 1 MiB only: on one host the per-byte cost is not one
 * number (messages that stay in cache move faster than those that go to DRAM),
 * so the single line misfits the middle; the split values are the ones to use
 * for latency-bound and for bandwidth-bound (MB-sized gradient) messages.
 */
#include <limits.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { ALLREDUCE, REDUCE_SCATTER, ALLGATHER, ALLTOALL, ALLTOALLV, NCOLL };
static const char *NAMES[NCOLL] = {"allreduce", "reduce_scatter", "allgather", "alltoall", "alltoallv"};
#define MAXSIZES 64

static int P, R;                     /* ranks, my rank */
static char *sbuf, *rbuf;
static int *scnt, *sdis, *rcnt, *rdis;

/* Least-squares line t = c0 + c1 x over the sizes in [lo, hi] (nominal
 * bytes), weighted by 1/t^2 (relative error) when weighted, else plain. */
static void line_fit(const double *x, const double *t, const long *sizes, int ns, long lo, long hi, int weighted,
                     double *c0, double *c1) {
    double sw = 0, sx = 0, sy = 0, sxx = 0, sxy = 0;
    for (int s = 0; s < ns; s++) {
        if (sizes[s] < lo || sizes[s] > hi) continue;
        double w = weighted ? 1.0 / (t[s] * t[s]) : 1.0;
        sw += w; sx += w * x[s]; sy += w * t[s]; sxx += w * x[s] * x[s]; sxy += w * x[s] * t[s];
    }
    double det = sw * sxx - sx * sx;
    *c1 = det != 0 ? (sw * sxy - sx * sy) / det : 0;
    *c0 = sw > 0 ? (sy - *c1 * sx) / sw : 0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Share of n that rank r sends to rank j in the alltoallv pattern. */
static long share(long n_elems, int r, int j) {
    long wsum = 0;
    for (int k = 0; k < P; k++) wsum += 1 + (r + k) % P;
    return n_elems * (1 + (r + j) % P) / wsum;
}

/* Sets up counts for collective c at nominal size n bytes; returns the bytes
 * actually worked on (the "n" of the model) and the busiest rank's off-rank
 * bytes in *wire. */
static long prepare(int c, long n, double *wire) {
    long bytes = 0;
    switch (c) {
    case ALLREDUCE: {
        long f = n / 4 < 1 ? 1 : n / 4;
        bytes = f * 4;
        *wire = 2.0 * (P - 1) / P * bytes;
        break;
    }
    case REDUCE_SCATTER: {
        long f = n / 4 / P < 1 ? 1 : n / 4 / P;
        scnt[0] = (int)f;
        bytes = f * 4 * P;
        *wire = (double)(P - 1) / P * bytes;
        break;
    }
    case ALLGATHER:
    case ALLTOALL: {
        long b = n / P < 1 ? 1 : n / P;
        scnt[0] = (int)b;
        bytes = b * P;
        *wire = (double)(P - 1) / P * bytes;
        break;
    }
    case ALLTOALLV: {
        long b = n < P ? P : n;
        double worst = 0;
        for (int r = 0; r < P; r++) {     /* every rank's pattern, for the busiest */
            double off = 0;
            for (int j = 0; j < P; j++)
                if (j != r) off += share(b, r, j);
            if (off > worst) worst = off;
        }
        long s = 0, t = 0;
        for (int j = 0; j < P; j++) {
            scnt[j] = (int)share(b, R, j);
            sdis[j] = (int)s;
            s += scnt[j];
            rcnt[j] = (int)share(b, j, R);
            rdis[j] = (int)t;
            t += rcnt[j];
        }
        bytes = s;
        *wire = worst;
        break;
    }
    }
    return bytes;
}

static void call(int c, long bytes) {
    switch (c) {
    case ALLREDUCE:
        MPI_Allreduce(sbuf, rbuf, (int)(bytes / 4), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        break;
    case REDUCE_SCATTER:
        MPI_Reduce_scatter_block(sbuf, rbuf, scnt[0], MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        break;
    case ALLGATHER:
        MPI_Allgather(sbuf, scnt[0], MPI_BYTE, rbuf, scnt[0], MPI_BYTE, MPI_COMM_WORLD);
        break;
    case ALLTOALL:
        MPI_Alltoall(sbuf, scnt[0], MPI_BYTE, rbuf, scnt[0], MPI_BYTE, MPI_COMM_WORLD);
        break;
    case ALLTOALLV:
        MPI_Alltoallv(sbuf, scnt, sdis, MPI_BYTE, rbuf, rcnt, rdis, MPI_BYTE, MPI_COMM_WORLD);
        break;
    }
}

int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    MPI_Comm_size(MPI_COMM_WORLD, &P);
    MPI_Comm_rank(MPI_COMM_WORLD, &R);
    long maxb = argc > 1 ? atol(argv[1]) : 16L << 20;
    int step = argc > 2 ? atoi(argv[2]) : 2;
    if (maxb < 8 || (step != 2 && step != 4)) {
        if (R == 0) fprintf(stderr, "usage: mpi_coll [max_bytes >= 8] [step 2|4]\n");
        MPI_Finalize();
        return 2;
    }
    long sizes[MAXSIZES];
    int ns = 0;
    for (long n = 8; n <= maxb && ns < MAXSIZES; n *= step) sizes[ns++] = n;
    if (sizes[ns - 1] != maxb && ns < MAXSIZES) sizes[ns++] = maxb;   /* 16 MiB with step 4 */

    size_t cap = (size_t)maxb + 64 * (size_t)P;
    sbuf = malloc(cap);
    rbuf = malloc(cap);
    scnt = calloc(P, sizeof *scnt);
    sdis = calloc(P, sizeof *sdis);
    rcnt = calloc(P, sizeof *rcnt);
    rdis = calloc(P, sizeof *rdis);
    if (!sbuf || !rbuf || !scnt || !sdis || !rcnt || !rdis) MPI_Abort(MPI_COMM_WORLD, 1);
    for (size_t i = 0; i < cap / 4; i++) ((float *)sbuf)[i] = (float)(i % 97) * 0.01f;
    memset(rbuf, 0, cap);

    static double us[NCOLL][MAXSIZES], wire[NCOLL][MAXSIZES];
    static long nbytes[NCOLL][MAXSIZES];
    static int nreps[NCOLL][MAXSIZES];
    double *t = malloc(1001 * sizeof *t), *tmax = malloc(1001 * sizeof *tmax);
    for (int c = 0; c < NCOLL; c++) {
        for (int s = 0; s < ns; s++) {
            long bytes = prepare(c, sizes[s], &wire[c][s]);
            long reps = (1L << 26) / (bytes > 0 ? bytes : 1);
            reps = reps < 11 ? 11 : reps > 1001 ? 1001 : reps;
            reps |= 1;
            for (int w = 0; w < 3; w++) call(c, bytes);
            for (long i = 0; i < reps; i++) {
                MPI_Barrier(MPI_COMM_WORLD);
                double t0 = MPI_Wtime();
                call(c, bytes);
                t[i] = MPI_Wtime() - t0;
            }
            MPI_Allreduce(t, tmax, (int)reps, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
            qsort(tmax, reps, sizeof *tmax, cmp_double);
            us[c][s] = tmax[reps / 2] * 1e6;
            nbytes[c][s] = bytes;
            nreps[c][s] = (int)reps;
        }
    }

    if (R == 0) {
        char host[MPI_MAX_PROCESSOR_NAME];
        int hl;
        MPI_Get_processor_name(host, &hl);
        printf("# mpi_coll: %d ranks on %s, median us per call (max over ranks), sizes 8 B .. %ld B\n", P, host, maxb);
        printf("%10s", "bytes");
        for (int c = 0; c < NCOLL; c++) printf(" %15s", NAMES[c]);
        printf("\n");
        for (int s = 0; s < ns; s++) {
            printf("%10ld", sizes[s]);
            for (int c = 0; c < NCOLL; c++) printf(" %15.2f", us[c][s]);
            printf("\n");
        }
        double fa[NCOLL], fb[NCOLL], fe[NCOLL], sa[NCOLL], lb[NCOLL];
        int lat[NCOLL];
        for (int c = 0; c < NCOLL; c++) {
            lat[c] = c == ALLREDUCE ? 2 * (P - 1) : P - 1;
            double c0, c1, d0, d1;
            line_fit(wire[c], us[c], sizes, ns, 0, LONG_MAX, 1, &c0, &c1);
            double err = 0;
            for (int s = 0; s < ns; s++) {
                double e = fabs(c0 + c1 * wire[c][s] - us[c][s]) / us[c][s];
                if (e > err) err = e;
            }
            fa[c] = lat[c] > 0 ? c0 / lat[c] : 0;
            fb[c] = c1 > 0 ? 1e-3 / c1 : INFINITY;   /* bytes/us -> GB/s: 1 B/us = 1e-3 GB/s */
            fe[c] = err;
            line_fit(wire[c], us[c], sizes, ns, 0, 4096, 1, &c0, &c1);          /* small: alpha */
            line_fit(wire[c], us[c], sizes, ns, 1 << 20, LONG_MAX, 0, &d0, &d1); /* large: beta */
            sa[c] = lat[c] > 0 ? c0 / lat[c] : 0;
            lb[c] = d1 > 0 ? 1e-3 / d1 : INFINITY;
        }
        printf("\n# fit t = L*alpha + X(n)/beta: 'all' over every size weighted by 1/t^2; 'split': alpha from\n"
               "# n <= 4 KiB (weighted), beta from n >= 1 MiB (unweighted slope)\n");
        printf("%-15s %4s %10s %11s %12s %13s %14s %14s\n", "collective", "L", "alpha_us", "beta_GB/s", "max_rel_err",
               "split alpha", "split beta", "busbw@max GB/s");
        for (int c = 0; c < NCOLL; c++)
            printf("%-15s %4d %10.3f %11.3f %12.2f %13.3f %14.3f %14.3f\n", NAMES[c], lat[c], fa[c], fb[c], fe[c],
                   sa[c], lb[c], wire[c][ns - 1] / us[c][ns - 1] * 1e-3);
        printf("\n");
        for (int c = 0; c < NCOLL; c++)
            for (int s = 0; s < ns; s++)
                printf("coll name=%s p=%d bytes=%ld wire_bytes=%.0f us=%.3f busbw_GBps=%.4f reps=%d\n", NAMES[c], P,
                       nbytes[c][s], wire[c][s], us[c][s], wire[c][s] / us[c][s] * 1e-3, nreps[c][s]);
        for (int c = 0; c < NCOLL; c++)
            printf("fit name=%s p=%d alpha_us=%.4f beta_GBps=%.4f lat_terms=%d max_rel_err=%.3f sizes=%d "
                   "split_alpha_us=%.4f split_beta_GBps=%.4f\n",
                   NAMES[c], P, fa[c], fb[c], lat[c], fe[c], ns, sa[c], lb[c]);
    }
    free(t);
    free(tmax);
    free(sbuf);
    free(rbuf);
    free(scnt);
    free(sdis);
    free(rcnt);
    free(rdis);
    MPI_Finalize();
    return 0;
}
