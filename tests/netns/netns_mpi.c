/* netns_mpi.c - the tiny MPI payload of tests/test_netns.sh (built there with
 * mpicc into a temp dir). Every rank prints where it runs:
 *     rank R/N netns net:[INODE] ip A.B.C.D host NAME
 * then the ranks do an MPI_Allreduce (sum) of NELEM doubles and an
 * MPI_Alltoallv with counts that differ per (sender, receiver) pair, and check
 * every element they receive against the value it must have. The last line is
 *     rank R ok allreduce=BYTES alltoallv=BYTES
 * or "rank R FAIL ..." with exit status 1. Argument: NELEM (262144, 2 MiB). */
#define _GNU_SOURCE
#include <mpi.h>
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* the first IPv4 address of an interface that is up and not loopback */
static void my_ip(char *buf, size_t n)
{
    struct ifaddrs *ifa, *p;
    snprintf(buf, n, "none");
    if (getifaddrs(&ifa) != 0) return;
    for (p = ifa; p; p = p->ifa_next) {
        if (!p->ifa_addr || p->ifa_addr->sa_family != AF_INET) continue;
        if ((p->ifa_flags & IFF_LOOPBACK) || !(p->ifa_flags & IFF_UP)) continue;
        inet_ntop(AF_INET, &((struct sockaddr_in *)p->ifa_addr)->sin_addr, buf, (socklen_t)n);
        break;
    }
    freeifaddrs(ifa);
}

/* what rank s sends to rank d: its count and its i-th value (exact in double) */
static int a2a_count(int s, int d) { return 1000 * (s + 1) + 37 * d + 1; }
static double a2a_val(int s, int d, int i) { return s * 1e7 + d * 1e6 + i; }

int main(int argc, char **argv)
{
    int rank, size, bad = 0;
    long nelem = argc > 1 ? atol(argv[1]) : 262144;
    char ns[64] = "?", ip[64], host[MPI_MAX_PROCESSOR_NAME];
    int hl;
    ssize_t l;

    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if ((l = readlink("/proc/self/ns/net", ns, sizeof ns - 1)) > 0) ns[l] = 0;
    my_ip(ip, sizeof ip);
    MPI_Get_processor_name(host, &hl);
    printf("rank %d/%d netns %s ip %s host %s\n", rank, size, ns, ip, host);
    fflush(stdout);

    /* allreduce: element i of rank r is r + 1 + i % 1000; the sum is known */
    double *x = malloc(nelem * sizeof *x), *y = malloc(nelem * sizeof *y);
    for (long i = 0; i < nelem; i++) x[i] = rank + 1 + (double)(i % 1000);
    MPI_Allreduce(x, y, (int)nelem, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    for (long i = 0; i < nelem && bad < 5; i++) {
        double want = size * (size + 1) / 2.0 + size * (double)(i % 1000);
        if (y[i] != want) {
            printf("rank %d FAIL allreduce[%ld] = %g, want %g\n", rank, i, y[i], want);
            bad++;
        }
    }

    /* alltoallv with a different count for every (sender, receiver) pair */
    int *sc = malloc(size * sizeof *sc), *sd = malloc(size * sizeof *sd);
    int *rc = malloc(size * sizeof *rc), *rd = malloc(size * sizeof *rd);
    long st = 0, rt = 0;
    for (int p = 0; p < size; p++) {
        sc[p] = a2a_count(rank, p); sd[p] = (int)st; st += sc[p];
        rc[p] = a2a_count(p, rank); rd[p] = (int)rt; rt += rc[p];
    }
    double *sb = malloc(st * sizeof *sb), *rb = malloc(rt * sizeof *rb);
    for (int p = 0; p < size; p++)
        for (int i = 0; i < sc[p]; i++) sb[sd[p] + i] = a2a_val(rank, p, i);
    for (long i = 0; i < rt; i++) rb[i] = -1;
    MPI_Alltoallv(sb, sc, sd, MPI_DOUBLE, rb, rc, rd, MPI_DOUBLE, MPI_COMM_WORLD);
    for (int p = 0; p < size; p++)
        for (int i = 0; i < rc[p] && bad < 10; i++)
            if (rb[rd[p] + i] != a2a_val(p, rank, i)) {
                printf("rank %d FAIL alltoallv from %d [%d] = %g, want %g\n", rank, p, i,
                       rb[rd[p] + i], a2a_val(p, rank, i));
                bad++;
            }

    int anybad = 0;
    MPI_Allreduce(&bad, &anybad, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    if (anybad == 0)
        printf("rank %d ok allreduce=%ld alltoallv=%ld\n", rank, (long)(nelem * sizeof(double)),
               (long)(st * sizeof(double)));
    else if (bad == 0)
        printf("rank %d FAIL another rank saw wrong data\n", rank);
    fflush(stdout);
    free(x); free(y); free(sc); free(sd); free(rc); free(rd); free(sb); free(rb);
    MPI_Finalize();
    return anybad ? 1 : 0;
}
