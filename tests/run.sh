#!/usr/bin/env bash
# run.sh BUILD - runs every test: the C suites (every ISA), the exported
# symbols, the server, CLI, bad-input and crash tests, the fuzz regression
# inputs, the portable build and install; ends with one line
# "total: N passed, N failed" over all of them.
set -u
B=${1:-build}
cd "$(dirname "$0")/.."

pass=0 fail=0
add_counts() {  # reads "N passed, N failed" from the last such line of $1
    local line
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$1" | tail -n 1)
    if [ -z "$line" ]; then
        echo "run.sh: $2 printed no summary (crashed?)" >&2
        fail=$((fail + 1))
        return
    fi
    pass=$((pass + $(echo "$line" | sed -E 's/^([0-9]+) passed.*/\1/')))
    fail=$((fail + $(echo "$line" | sed -E 's/.* ([0-9]+) failed.*/\1/')))
}

log=$(mktemp)
trap 'rm -f "$log"' EXIT

echo "== C tests ($B/test_deepmoe)"
"$B/test_deepmoe" 2>&1 | tee "$log"
st=${PIPESTATUS[0]}
add_counts "$log" test_deepmoe
if [ "$st" -ne 0 ] && ! grep -qE '^[0-9]+ passed, [1-9][0-9]* failed' "$log"; then
    echo "test_deepmoe exited with status $st"; fail=$((fail + 1))
fi

# the same suite with the best kernels forced down to AVX2 and to portable C
# (DEEPMOE_ISA), so every path that resolves DM_ISA_AUTO is exercised on each table
for isa in avx2 ref; do
    echo "== C tests, DEEPMOE_ISA=$isa"
    DEEPMOE_ISA=$isa "$B/test_deepmoe" >"$log" 2>&1
    st=$?
    grep -E '^(FAIL|  )' "$log" | grep -v '^  parity\|^  gradcheck\|^  train parity\|^  synthetic' || true
    tail -n 1 "$log"
    add_counts "$log" "test_deepmoe ($isa)"
done

# the shared library exports exactly the DM_API declarations (SKIP unless VISIBILITY=hidden)
echo "== exported symbols ($B/libdeepmoe.so vs DM_API in include/)"
bash tests/test_abi.sh "$B" 2>&1 | tee "$log"
add_counts "$log" test_abi.sh
echo "== config table (dm_config in deepmoe.h against src/nn/config_fields.h, at compile time)"
bash tests/test_config_table.sh 2>&1 | tee "$log"
add_counts "$log" test_config_table.sh

echo "== server tests ($B/deepmoe serve, over HTTP)"
/usr/bin/python3 tests/test_serve.py "$B/deepmoe" 2>&1 | tee "$log"
add_counts "$log" test_serve.py
echo "== profiler (--profile traces of bench, train, infer, eval and serve; profile-summary)"
/usr/bin/python3 tests/test_profile.py "$B/deepmoe" 2>&1 | tee "$log"
add_counts "$log" test_profile.py
echo "== training report (deepmoe report; rendered in headless Chromium, SKIP without it)"
/usr/bin/python3 tests/test_report.py "$B/deepmoe" 2>&1 | tee "$log"
add_counts "$log" test_report.py
echo "== deepmoe top under a pty and the Grafana dashboard's queries, against a running server"
/usr/bin/python3 tests/test_top.py "$B/deepmoe" 2>&1 | tee "$log"
add_counts "$log" test_top.py
echo "== server soak (${SOAK_S:-20} s of mixed valid and hostile traffic; SOAK_S=600 for the long run)"
/usr/bin/python3 tests/soak.py "$B/deepmoe" 2>&1 | tee "$log"
add_counts "$log" soak.py

echo "== distributed training and inference (mpirun -np 2 and 4; SKIP without MPI)"
bash tests/test_dist.sh "$B/deepmoe" 2>&1 | tee "$log"
add_counts "$log" test_dist.sh
echo "== two hosts: 2 ranks in 2 network namespaces over TCP (SKIP where namespaces cannot be made)"
bash tests/test_netns.sh "$B/deepmoe" 2>&1 | tee "$log"
add_counts "$log" test_netns.sh

echo "== CLI tests ($B/deepmoe)"
bash tests/test_cli.sh "$B/deepmoe" 2>&1 | tee "$log"
add_counts "$log" test_cli.sh

# SIGKILL at random moments, mid-write included; every trial must resume to the
# uninterrupted run's bytes (fewer trials under the sanitizers, which are slower)
if [ "$B" = build ]; then trials=${CRASH_TRIALS:-100}; else trials=${CRASH_TRIALS:-20}; fi
echo "== crash tests ($B/deepmoe train killed at random, $trials trials$([ "$B" = build ] || echo ', fewer in the sanitizer build'))"
bash tests/test_crash.sh "$B/deepmoe" "$trials" 2>&1 | tee "$log"
add_counts "$log" test_crash.sh

# inputs that once crashed a fuzz harness (tests/fuzz/regress/<target>/), each run
# once through its harness, when clang can link libFuzzer (docs/fuzzing.md)
if [ "$B" = build ] && ls tests/fuzz/regress/*/* >/dev/null 2>&1; then
    if ! echo 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { return d && n; }' |
        ${FUZZ_CC:-clang} -x c -fsanitize=fuzzer,address,undefined -o /dev/null - 2>/dev/null; then
        echo "SKIP fuzz regression inputs (no clang with libFuzzer: scripts/deps.sh installs clang and libclang-rt-dev)"
    elif make --no-print-directory -j2 fuzz-build >"$log" 2>&1; then
        echo "== fuzz regression inputs (build/fuzz)"
        bash tests/fuzz/run.sh --regress-only build/fuzz 2>&1 | sed 's/^fuzz: //' | tee "$log"
        add_counts "$log" "fuzz regression inputs"
    else
        tail -n 20 "$log"; echo "== fuzz regression inputs: make fuzz-build failed"; fail=$((fail + 1))
    fi
fi

# the x86 files left out (make X86=0 BUILD=build/portable), unit tests on ref
if [ "$B" = build ]; then
    echo "== portable build test (build/portable: X86=0, DEEPMOE_ISA=ref)"
    bash tests/test_build.sh 2>&1 | tee "$log"
    add_counts "$log" test_build.sh
else
    echo "SKIP portable build test (X86=0): it runs with the default build only"
fi

if [ "$B" = build ]; then  # the sanitizer build is not installed
    echo "== install test"
    bash tests/test_install.sh 2>&1 | tee "$log"
    add_counts "$log" test_install.sh
fi

echo "total: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
