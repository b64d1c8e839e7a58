#!/usr/bin/env bash
# mpi_coll.sh - builds bench/mpi_coll.c with mpicc (into build/bench/, outside
# the Makefile) and runs it under mpirun: the MPI collectives' median times for
# 8 B .. 16 MiB and the fitted alpha (us) / beta (GB/s) per collective.
# Usage: bench/mpi_coll.sh [np (2)] [max_bytes (16777216)] [step 2|4 (2)]
# np above the CPU count runs oversubscribed (mpirun --oversubscribe): the ranks
# then share cores and the times measure the scheduler as much as MPI.
# MPIRUN_FLAGS adds mpirun flags (e.g. --mca coll_tuned_use_dynamic_rules 1 ...).
# As root, OMPI_ALLOW_RUN_AS_ROOT(_CONFIRM) are set for the run.
set -eu
cd "$(dirname "$0")/.."
NP=${1:-2}
MAXB=${2:-16777216}
STEP=${3:-2}
mkdir -p build/bench
if [ ! -x build/bench/mpi_coll ] || [ bench/mpi_coll.c -nt build/bench/mpi_coll ]; then
    mpicc -std=c11 -O2 -Wall -Wextra -D_POSIX_C_SOURCE=200809L bench/mpi_coll.c -lm -o build/bench/mpi_coll
fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
FLAGS=""
[ "$NP" -gt "$(nproc)" ] && FLAGS="--oversubscribe"
echo "# $(mpirun --version 2>&1 | head -1), np $NP $FLAGS, $(nproc) CPUs ($(lscpu | sed -n 's/^Model name: *//p')), $(date -u +%F), load average $(cut -d' ' -f1 /proc/loadavg)"
mpirun -np "$NP" $FLAGS ${MPIRUN_FLAGS:-} --bind-to none build/bench/mpi_coll "$MAXB" "$STEP"
