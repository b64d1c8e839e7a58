#!/usr/bin/env bash
# test_build.sh - the portable build: the library, CLI and unit tests with the
# x86 files left out and without MPI (make X86=0 MPI=0 BUILD=build/portable
# CFLAGS=-O3, as on a CPU that is not x86-64 with no MPI, with a user's CFLAGS), then the unit tests on the
# reference kernels (DEEPMOE_ISA=ref).
# (The normal build's unit tests run with DEEPMOE_ISA=ref in tests/run.sh.)
# Ends with "N passed, N failed": its checks plus the portable unit tests.
set -u
cd "$(dirname "$0")/.."
P=build/portable
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
pass=0 fail=0
check() { if eval "$2" >"$T/log" 2>&1; then pass=$((pass + 1)); echo "ok   $1"; else fail=$((fail + 1)); echo "FAIL $1: $(tail -c 600 "$T/log")"; fi; }

# CFLAGS=-O3 on the command line: it must add to the required flags (-std=c11 -Werror -Iinclude ...),
# not replace them, and the tree must stay warning-free at -O3
check "make X86=0 MPI=0 BUILD=$P CFLAGS=-O3 (library, CLI, unit tests)" "make --no-print-directory -j2 X86=0 MPI=0 BUILD=$P CFLAGS=-O3 all"
check "CFLAGS=-O3 appended to the required flags" "grep -q -- '-O3' $P/flags && grep -q -- '-Werror' $P/flags && grep -q -- '-std=c11' $P/flags"
check "no AVX object or symbol in the portable library" \
    "! ar t $P/libdeepmoe.a | grep -E '_avx(2|512)\.o\$' && ! nm -A $P/libdeepmoe.a $P/libdeepmoe.so | grep -E 'dm_kernels_avx|dm_peak_probe_avx'"
check "without MPI: no libmpi, and --dist says what to install" \
    "! ldd $P/deepmoe | grep -q libmpi && $P/deepmoe train --data synthetic --out $T/r --dist dp 2>&1 | grep -q 'built without MPI: install libopenmpi-dev'"
check "every ISA resolves to ref" "$P/deepmoe --version | grep -qF '(kernels: ref)' && DEEPMOE_ISA=avx512 $P/deepmoe --version | grep -qF '(kernels: ref)'"

if [ -x "$P/test_deepmoe" ]; then
    DEEPMOE_ISA=ref "$P/test_deepmoe" >"$T/unit" 2>&1
    st=$?
    grep -E '^(FAIL|SKIP)' "$T/unit"
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$T/unit" | tail -n 1)
    if [ -n "$line" ]; then
        echo "portable unit tests (DEEPMOE_ISA=ref): $line"
        pass=$((pass + $(echo "$line" | sed -E 's/^([0-9]+) passed.*/\1/')))
        fail=$((fail + $(echo "$line" | sed -E 's/.* ([0-9]+) failed.*/\1/')))
    fi
    if [ -z "$line" ] || { [ "$st" -ne 0 ] && ! echo "$line" | grep -q ' [1-9][0-9]* failed'; }; then
        echo "FAIL portable unit tests: status $st: $(tail -c 600 "$T/unit")"; fail=$((fail + 1))
    fi
else
    echo "FAIL portable unit tests: $P/test_deepmoe was not built"; fail=$((fail + 1))
fi
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
