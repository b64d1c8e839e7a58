#!/usr/bin/env bash
# test_crash.sh DEEPMOE [TRIALS] - crash safety of `deepmoe train`. A small run
# that checkpoints every step (so that writes are most of its time) is killed
# with SIGKILL at random moments, TRIALS times (100), some trials more than
# once; after every kill the files under their final names must be whole (each
# is byte for byte the model or checkpoint of some step of the uninterrupted
# run, never a part), and `--resume` (or a fresh start where no checkpoint
# exists yet, as a user would do) must finish the run with the same final
# model and checkpoint bytes as the uninterrupted run, leaving no temp files.
# Delays come from a generator seeded per trial (CRASH_SEED, 1), so a failing
# trial's delays can be replayed (CRASH_ONLY=I runs trial I alone; CRASH_KEEP=DIR
# keeps the directories of failed trials). The test stops starting trials at
# CRASH_TIME_CAP seconds (300) and a watchdog ends it if anything hangs. Prints
# ok/FAIL lines (a FAIL per failed trial; VERBOSE=1 an ok per passed one too),
# where the kills landed, and "N passed, N failed".
set -u
export LC_ALL=C   # $EPOCHREALTIME with a decimal point
BIN=$(realpath "$1")
TRIALS=${2:-100}
SEED=${CRASH_SEED:-1}
CAP=${CRASH_TIME_CAP:-300}
T=$(mktemp -d)
cd "$T"
cp "$BIN" ./deepmoe && BIN=$T/deepmoe   # a rebuild while the test runs must not change its bytes
pass=0 fail=0
ok()  { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1: $2"; }

# the watchdog: every command below has its own bound, so this only fires on a bug in the test
main=$$ t_begin=$EPOCHREALTIME
(
    trap 'exit 0' TERM
    for ((s = 0; s < CAP + 120; s++)); do
        kill -0 "$main" 2>/dev/null || exit 0
        sleep 1 </dev/null >/dev/null 2>&1
    done
    echo "FAIL watchdog: test_crash.sh still running after $((CAP + 120)) s; killed"
    echo "0 passed, 1 failed"
    pkill -KILL -P "$main" 2>/dev/null
    kill -KILL "$main" 2>/dev/null
    rm -rf "$T"
) &
watchdog=$!
trap 'kill "$watchdog" 2>/dev/null; rm -rf "$T"' EXIT

us_now() { local t=${EPOCHREALTIME/./}; echo $((10#$t)); }    # microseconds since the epoch
elapsed_s() { echo $((($(us_now) - ${t_begin/./}) / 1000000)); }
rand30() { echo $(((RANDOM << 15) | RANDOM)); }               # 30 random bits from $RANDOM
secs() { printf '%d.%06d' $(($1 / 1000000)) $(($1 % 1000000)); }
hash() { sha256sum "$1" | cut -c1-64; }
TO="timeout -s KILL 60"                                       # no single command may hang the test

DATA="synthetic:regimes=4,dim=64,rows=2000"
STEPS=40
RUN_FLAGS="--checkpoint-every 1 --log-every 10 --threads 1"
RUN="--data $DATA --dim 64 --experts 8 --hidden 64 --steps $STEPS --batch 32 --warmup 5 --seed 3 $RUN_FLAGS"
MODEL=model.safetensors CKPT=checkpoint/state.safetensors

# ---------------------------------------------------------------- references
t0=$(us_now)
$TO "$BIN" train $RUN --out ref >ref.log 2>&1
st=$?
T_RUN=$(($(us_now) - t0))
if [ "$st" -ne 0 ] || [ ! -s ref/$MODEL ] || [ ! -s ref/$CKPT ]; then
    bad "uninterrupted reference run" "exit $st: $(tail -c 400 ref.log)"
    echo "$pass passed, $fail failed"
    exit 1
fi
REF_MODEL=$(hash ref/$MODEL) REF_CKPT=$(hash ref/$CKPT)
ok "uninterrupted run: $STEPS steps, a checkpoint and model write each step, $(secs $T_RUN) s"

# every step's files, from a chain of one-step runs: what may lie under the final names after a kill
declare -A MODEL_AT CKPT_AT
t_chain=$(us_now) t0=$(us_now)
$TO "$BIN" train $RUN --stop-at 1 --out chain >chain.log 2>&1
st=$?
T_FIRST=$(($(us_now) - t0))  # start-up + one step + the first checkpoint and model writes
for ((k = 1; k <= STEPS && st == 0; k++)); do
    [ "$k" -gt 1 ] && { $TO "$BIN" train --data $DATA --resume chain --stop-at $k $RUN_FLAGS >chain.log 2>&1; st=$?; }
    [ "$st" -eq 0 ] || break
    MODEL_AT[$(hash chain/$MODEL)]=$k
    CKPT_AT[$(hash chain/$CKPT)]=$k
done
if [ "$st" -eq 0 ] && [ "$(hash chain/$MODEL)" = "$REF_MODEL" ] && [ "$(hash chain/$CKPT)" = "$REF_CKPT" ]; then
    ok "a chain of $STEPS one-step resumes ends with the uninterrupted run's bytes ($(secs $(($(us_now) - t_chain))) s)"
else
    bad "chain of one-step resumes" "exit $st at step $k: $(tail -c 400 chain.log)"
fi

# ---------------------------------------------------------------- stale temp files
# a writer killed mid-write leaves PATH.tmp.PID; the next write of PATH removes those whose
# process is gone, and leaves a live process's and every other name alone
mkdir stale
dead=$(($(cat /proc/sys/kernel/pid_max 2>/dev/null || echo 4194304) + 1))   # a PID no process can have
keep="m.safetensors.tmp.$$ m.safetensors.tmp.0$dead m.safetensors.tmp.${dead}x other.safetensors.tmp.$dead"
for f in m.safetensors.tmp.$dead $keep; do : >"stale/$f"; done
$TO "$BIN" init --out stale/m.safetensors --dim 16 --experts 2 >stale.log 2>&1
st=$? left_ok=1
for f in $keep; do [ -e "stale/$f" ] || left_ok=0; done
if [ "$st" -eq 0 ] && [ -s stale/m.safetensors ] && [ ! -e "stale/m.safetensors.tmp.$dead" ] && [ "$left_ok" = 1 ]; then
    ok "a dead writer's temp file is removed at the next write; a live one's and other names stay"
else
    bad "stale temp files" "exit $st; left: $(ls stale | tr '\n' ' ') $(head -c 200 stale.log)"
fi

# ---------------------------------------------------------------- trials
kills=0 targeted=0 mid_write=0 early=0 stale_seen=0 newer_ckpt=0 newer_model=0 trials_run=0
missed=0 missed_random=0 missed_write=0 missed_renamed=0 last_kc=0 history=""

# after_kill DIR PID: classifies where the kill landed and checks the files under the final names
after_kill() {
    local dir=$1 pid=$2 h km="" kc=""
    if [ -n "$(find "$dir" -name "*.tmp.$pid" 2>/dev/null)" ]; then mid_write=$((mid_write + 1)); fi
    if [ -e "$dir/$MODEL" ]; then
        h=$(hash "$dir/$MODEL")
        km=${MODEL_AT[$h]:-}
        if [ -z "$km" ]; then
            echo "model.safetensors after the kill is no step's model ($($TO "$BIN" inspect --no-tensors "$dir/$MODEL" 2>&1 | head -c 300))"
            return 1
        fi
    fi
    if [ -e "$dir/$CKPT" ]; then
        h=$(hash "$dir/$CKPT")
        kc=${CKPT_AT[$h]:-}
        [ -n "$kc" ] || { echo "checkpoint/state.safetensors after the kill is no step's checkpoint (half-written?)"; return 1; }
        if [ -z "$km" ]; then
            echo "the kill left checkpoint/state.safetensors of step $kc but no model.safetensors: --resume cannot continue"
            return 1
        fi
        [ "$kc" -gt "$km" ] && newer_ckpt=$((newer_ckpt + 1))
        [ "$kc" -lt "$km" ] && newer_model=$((newer_model + 1))
        last_kc=$kc
    else
        last_kc=0
        early=$((early + 1))
    fi
    history="$history; left checkpoint ${kc:--} model ${km:--}"
    return 0
}

# poll_until PID TEST...: busy-waits until TEST succeeds (0), PID has ended or 20 s have passed (1)
poll_until() {
    local pid=$1 n=0 t end=$((${EPOCHREALTIME/./} + 20000000)); shift
    until "$@"; do
        kill -0 "$pid" 2>/dev/null || return 1
        n=$((n + 1))
        if [ $((n % 512)) -eq 0 ]; then t=${EPOCHREALTIME/./}; [ "$t" -lt "$end" ] || return 1; fi
    done
}
writing() { [ -e "$1/$MODEL.tmp.$2" ] || [ -e "$1/$CKPT.tmp.$2" ]; }   # DIR PID: a write under way
tmp_there() { [ -e "$1.tmp.$2" ]; }                                  # FILE PID
tmp_gone() { [ ! -e "$1.tmp.$2" ]; }

# trial I: kill the run 1 to 3 times, then let it finish. When a kill comes: in most trials after a
# random delay over what is left of the run (in every fifth, the first kill early, before the
# first checkpoint); in every fifth, after a random delay as soon as a temp file appears (in the
# middle of a write); in every fifth, just after the rename of the checkpoint or (every tenth) of
# the model, that is between the two writes of a step (the first kill at step 1 in half of these)
trial() {
    local i=$1 dir=t$1 r nk=1 k=0 st pid delay span what mode tgt log=t$1.log
    RANDOM=$((SEED * 100003 + i))
    r=$((RANDOM % 100))
    [ "$r" -ge 60 ] && nk=2
    [ "$r" -ge 85 ] && nk=3
    local -a args
    last_kc=0 history=""
    while :; do
        # (a resume keeps the run's own training settings, but not these run flags)
        if [ -s "$dir/$CKPT" ]; then args=(train --data "$DATA" --resume "$dir" $RUN_FLAGS); what=resume
        else args=(train $RUN --out "$dir"); what=start; fi
        if [ "$k" -ge "$nk" ]; then
            $TO "$BIN" "${args[@]}" >"$log" 2>&1
            st=$?
            [ "$st" -eq 0 ] || { echo "$what after $k kill(s) failed (exit $st): $(tail -c 300 "$log" | tr '\n' ' ')"; return 1; }
            break
        fi
        span=$((T_FIRST + (T_RUN - T_FIRST) * (STEPS - last_kc) / STEPS))
        case $((i % 5)) in
            0) mode=random; [ "$k" -eq 0 ] && span=$((T_FIRST * 3 / 4)) ;;
            1) mode=write ;;
            2) mode=renamed; tgt=$CKPT; [ $((i % 10)) -eq 7 ] && tgt=$MODEL
               [ "$k" -eq 0 ] && [ $((i % 20)) -lt 10 ] && span=1 ;;
            *) mode=random ;;
        esac
        delay=$(($(rand30) % span))
        # past the start-up (half of T_FIRST) unless this kill is meant to be early
        [ "$mode" = random ] && [ "$span" -gt "$T_FIRST" ] && delay=$((T_FIRST / 2 + delay % (span - T_FIRST / 2)))
        [ "$mode" = random ] || delay=$((delay * 8 / 10))   # leave a write to wait for
        "$BIN" "${args[@]}" >"$log" 2>&1 &
        pid=$!
        [ "$delay" -gt 0 ] && sleep "$(secs $delay)"
        case $mode in
            write) poll_until "$pid" writing "$dir" "$pid" ;;
            renamed) poll_until "$pid" tmp_there "$dir/$tgt" "$pid" && poll_until "$pid" tmp_gone "$dir/$tgt" "$pid" ;;
        esac
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null   # (no "Killed" notice)
        st=$?
        k=$((k + 1))
        history="$history | $what killed ($mode, $(secs $delay) s)"
        # it finished first: aim earlier from now on (the machine may be faster than when T_RUN was timed)
        if [ "$st" -eq 0 ]; then
            missed=$((missed + 1)); eval "missed_$mode=\$((missed_$mode + 1))"
            [ "$mode" = random ] && T_RUN=$((T_RUN * 9 / 10))
            break
        fi
        [ "$mode" = random ] && T_RUN=$((T_RUN * 201 / 200))   # and a little later after each kill: ~5% miss
        if [ "$st" -ne 137 ]; then
            echo "$what (before kill $k, $mode, at $(secs $delay) s) failed on its own (exit $st): $(tail -c 300 "$log" | tr '\n' ' ')"
            return 1
        fi
        [ "$mode" = random ] || targeted=$((targeted + 1))
        kills=$((kills + 1))
        after_kill "$dir" "$pid" || { echo "(history:$history)"; return 1; }
        [ -n "$(find "$dir" -name '*.tmp.*' 2>/dev/null)" ] && stale_seen=$((stale_seen + 1))
    done
    local hm hc
    hm=$(hash "$dir/$MODEL") hc=$(hash "$dir/$CKPT")
    [ "$hm" = "$REF_MODEL" ] ||
        { echo "final model.safetensors differs from the uninterrupted run's (is step ${MODEL_AT[$hm]:-none}'s)"; return 1; }
    [ "$hc" = "$REF_CKPT" ] ||
        { echo "final checkpoint/state.safetensors differs from the uninterrupted run's (is step ${CKPT_AT[$hc]:-none}'s)"; return 1; }
    local left
    left=$(find "$dir" -name '*.tmp.*' -printf '%P ')
    [ -z "$left" ] || { echo "temp files left after the run finished: $left"; return 1; }
    rm -rf "$dir" "$log"
    return 0
}

capped=0 t_trials=$(us_now)
for ((i = 1; i <= TRIALS; i++)); do
    if [ "$(elapsed_s)" -ge "$CAP" ]; then capped=1; break; fi
    [ -n "${CRASH_ONLY:-}" ] && [ "$i" != "$CRASH_ONLY" ] && continue   # replay one trial
    trials_run=$((trials_run + 1))
    if trial "$i" >trial.msg 2>&1; then   # a redirected call still runs in this shell: the counters persist
        [ -n "${VERBOSE:-}" ] && ok "trial $i"
        pass=$((pass + 1))
    else
        bad "trial $i (CRASH_SEED=$SEED)" "$(tr '\n' ' ' <trial.msg)"
        if [ -n "${CRASH_KEEP:-}" ]; then mkdir -p "$CRASH_KEEP" && cp -a "t$i" "t$i.log" "$CRASH_KEEP"/ 2>/dev/null; fi
    fi
done
t_trials=$(($(us_now) - t_trials))
if [ "$capped" = 0 ]; then ok "$trials_run trials in $(secs $t_trials) s"
elif [ $((trials_run * 4)) -ge "$TRIALS" ]; then ok "$trials_run of $TRIALS trials (stopped at CRASH_TIME_CAP=$CAP s: a slow or busy machine)"
else bad "time cap" "only $trials_run of $TRIALS trials ran within CRASH_TIME_CAP=$CAP s"; fi
pct() { [ "$2" -gt 0 ] && echo $(($1 * 100 / $2)) || echo 0; }
echo "kills: $kills ($targeted timed on a write): $mid_write = $(pct $mid_write $kills)% in the middle of a write," \
     "$early before the first checkpoint, $stale_seen leaving temp files; after $newer_ckpt the checkpoint was ahead" \
     "of the model, after $newer_model the model ahead of the checkpoint"
echo "runs that finished before their kill came: $missed ($missed_random random, $missed_write write, $missed_renamed renamed)"
if [ -n "${CRASH_ONLY:-}" ]; then :
elif [ "$kills" -gt 0 ] && [ $((mid_write * 100)) -ge $((kills * 10)) ] && [ "$early" -gt 0 ]; then
    ok "kills landed mid-write and before the first checkpoint"
else
    bad "kill coverage" "too few kills mid-write ($mid_write of $kills) or before the first checkpoint ($early)"
fi
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
