#!/usr/bin/env bash
# run.sh [--regress-only] [DIR] - runs the fuzz harnesses that `make fuzz-build`
# put in DIR (build/fuzz), one at a time, each:
#   1. on every file in tests/fuzz/regress/<target>/, once (inputs that once
#      crashed it: they must keep passing);
#   2. unless --regress-only, for FUZZ_S seconds (60) from a scratch copy of
#      its seed corpus tests/fuzz/corpus/<target>/ (DIR/corpus/<target>/; the
#      repository's corpus is never written), with tests/fuzz/<target>.dict
#      (or the dict of its prefix, kserve.dict for kserve_json) when present.
# Any crash, sanitizer report, leak, slow input (-timeout=10 s) or memory
# blow-up (-rss_limit_mb=2048) fails the target; the input is kept under
# DIR/artifacts/<target>/ and its path printed with the report.
# FUZZ_TARGETS="npy idx" picks targets (default: every tests/fuzz/fuzz_*.c).
# Ends with one line per target and "fuzz: N passed, N failed" (targets).
set -u
cd "$(dirname "$0")/../.."
regress_only=0
if [ "${1:-}" = --regress-only ]; then regress_only=1; shift; fi
dir=${1:-build/fuzz}
secs=${FUZZ_S:-60}
targets=${FUZZ_TARGETS:-$(for f in tests/fuzz/fuzz_*.c; do t=${f#tests/fuzz/fuzz_}; echo "${t%.c}"; done)}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
common=(-timeout=10 -rss_limit_mb=2048)

max_len() {  # largest input worth generating for a target
    case $1 in
        pbtxt) echo 8192 ;;
        kserve_json | kserve_binary) echo 16384 ;;
        *) echo 65536 ;;   # files: models and checkpoints of tiny models fit
    esac
}

report() {  # prints what went wrong in log $1 and where the input is
    grep -m1 -A40 -E '^==[0-9]+==(ERROR|WARNING)|runtime error:|fuzz property failed|ERROR: libFuzzer|ALARM:|deadly signal' "$1" | head -n 50
    local unit
    unit=$(grep -oE 'Test unit written to .*' "$1" | tail -n 1)
    [ -n "$unit" ] || unit=$(grep -oE '^Running: .*' "$1" | tail -n 1)   # a regression input
    echo "  ${unit:-no input was written}; log: $1"
}

pass=0 fail=0 summary=()
for t in $targets; do
    bin=$dir/fuzz_$t
    log=$dir/logs/$t.log
    art=$dir/artifacts/$t
    mkdir -p "$dir/logs" "$art"
    : >"$log"
    if [ ! -x "$bin" ]; then
        echo "== fuzz_$t: $bin missing (make fuzz-build)"
        fail=$((fail + 1)); summary+=("fuzz_$t: FAILED (not built)")
        continue
    fi
    ok=1 note=""
    mapfile -t inputs < <(find "tests/fuzz/regress/$t" -type f ! -name '.*' ! -name 'README*' 2>/dev/null | sort)
    if [ ${#inputs[@]} -gt 0 ]; then
        echo "== fuzz_$t: ${#inputs[@]} regression input(s)"
        if ! "$bin" "${common[@]}" -artifact_prefix="$art/" "${inputs[@]}" >>"$log" 2>&1; then
            ok=0; echo "fuzz_$t: a regression input fails"; report "$log"
        fi
        note="${#inputs[@]} regression inputs"
    elif [ $regress_only -eq 1 ]; then
        continue
    fi
    if [ $regress_only -eq 0 ] && [ $ok -eq 1 ]; then
        corpus=$dir/corpus/$t
        rm -rf "$corpus"; mkdir -p "$corpus"
        if [ -d "tests/fuzz/corpus/$t" ]; then cp tests/fuzz/corpus/"$t"/* "$corpus"/ 2>/dev/null; fi
        dict=tests/fuzz/$t.dict
        [ -f "$dict" ] || dict=tests/fuzz/${t%%_*}.dict
        dict_arg=(); [ -f "$dict" ] && dict_arg=(-dict="$dict")
        echo "== fuzz_$t: ${secs} s from $(ls "$corpus" | wc -l) seed(s)"
        # value profiles: comparisons with sizes and magic numbers guide the search too
        "$bin" "${common[@]}" -max_len="$(max_len "$t")" -max_total_time="$secs" -use_value_profile=1 -print_final_stats=1 \
            -artifact_prefix="$art/" "${dict_arg[@]}" "$corpus" >>"$log" 2>&1
        st=$?
        execs=$(grep -oE 'stat::number_of_executed_units: [0-9]+' "$log" | tail -n 1 | grep -oE '[0-9]+$')
        note="${execs:-?} executions in ${secs} s, corpus $(ls "$corpus" | wc -l)${note:+, $note}"
        if [ $st -ne 0 ]; then ok=0; echo "fuzz_$t: failed (exit $st)"; report "$log"; fi
    fi
    if [ $ok -eq 1 ]; then
        pass=$((pass + 1)); summary+=("fuzz_$t: ok, $note")
    else
        fail=$((fail + 1)); summary+=("fuzz_$t: FAILED${note:+, $note}")
    fi
done
printf '%s\n' "${summary[@]}"
echo "fuzz: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
