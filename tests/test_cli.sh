#!/usr/bin/env bash
# test_cli.sh DEEPMOE - the command line as a user meets it: --help, init,
# inspect, infer, and every kind of bad input, each of which must give a
# one-line error naming the file and the problem, exit status 1 or 2, and no
# crash. Files are built byte by byte here; Python (standard library) only
# edits checkpoints (tests/ckpt_edit.py), and /usr/bin/python3 with numpy makes
# and checks the data of the preprocessing tests (skipped without numpy).
set -u
BIN=$(realpath "$1")
SRC=$(cd "$(dirname "$0")/.." && pwd)
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
cd "$T"
pass=0 fail=0

ok()  { pass=$((pass + 1)); echo "ok   $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1: $2"; }

# expect NAME STATUS PATTERN CMD...: exit status STATUS, stderr one line matching PATTERN
expect() {
    local name=$1 want=$2 pat=$3; shift 3
    "$@" >out.txt 2>err.txt
    local st=$? lines
    [ -n "${VERBOSE:-}" ] && cat err.txt
    lines=$(wc -l <err.txt)
    if [ "$st" -ne "$want" ]; then bad "$name" "exit $st, want $want; stderr: $(head -c 300 err.txt)"; return; fi
    if [ "$want" -eq 1 ] && [ "$lines" -ne 1 ]; then bad "$name" "stderr has $lines lines: $(head -c 300 err.txt)"; return; fi
    if ! grep -qE -- "$pat" err.txt; then bad "$name" "stderr lacks /$pat/: $(head -c 300 err.txt)"; return; fi
    ok "$name"
}

u64le() {  # 8 little-endian bytes of $1
    local v=$1 i
    for i in 0 1 2 3 4 5 6 7; do printf "\\$(printf '%03o' $((v & 255)))"; v=$((v >> 8)); done
}
u16le() { printf "\\$(printf '%03o' $(($1 & 255)))\\$(printf '%03o' $(($1 >> 8)))"; }

# safetensors FILE HEADER_JSON DATA_BYTES
st_file() { { u64le ${#2}; printf '%s' "$2"; head -c "$3" /dev/zero; } >"$1"; }

# npy FILE DESCR SHAPE_TEXT DATA_BYTES [raw bytes appended by caller]
npy_file() {
    local dict="{'descr': '$2', 'fortran_order': False, 'shape': $3, }"
    local total=$(( (10 + ${#dict} + 1 + 63) / 64 * 64 ))
    local pad=$(( total - 10 - ${#dict} - 1 ))
    { printf '\223NUMPY\001\000'; u16le $((total - 10)); printf '%s%*s\n' "$dict" "$pad" ''; head -c "$4" /dev/zero; } >"$1"
}

# ---------------------------------------------------------------- help
expect "no command is a usage error" 2 "usage: deepmoe" "$BIN"
expect "unknown command" 2 "unknown command 'frobnicate'" "$BIN" frobnicate
for c in init infer inspect demo train eval bench quantize export serve; do
    if "$BIN" "$c" --help >out.txt 2>&1 && grep -q "usage: deepmoe $c" out.txt; then ok "$c --help"; else bad "$c --help" "$(head -c 200 out.txt)"; fi
done
if "$BIN" --help | grep -q "commands:"; then ok "deepmoe --help"; else bad "deepmoe --help" "no command list"; fi
expect "unknown option" 2 "try 'deepmoe infer --help'" "$BIN" infer --bogus
expect "missing required options" 2 "--model, --input and --output are required" "$BIN" infer --model x

# ---------------------------------------------------------------- init / inspect / infer
if "$BIN" init --out m.safetensors >out.txt 2>err.txt && grep -q "2111496 parameters" out.txt; then
    ok "init default seed model"; else bad "init default seed model" "$(cat out.txt err.txt)"; fi
if "$BIN" inspect m.safetensors >out.txt 2>&1 && grep -q "dim 512, experts 8, top-k 2, hidden 256" out.txt &&
   grep -q "active per row 530952" out.txt && grep -q "experts.7.net.3.bias" out.txt; then
    ok "inspect"; else bad "inspect" "$(head -c 400 out.txt)"; fi
"$BIN" init --out v3.safetensors --dim 64 --experts 16 --top-k 4 --router sigmoid --groups 4 --topk-groups 2 \
    --selection-bias --route-scale 2.5 --expert-type swiglu --shared-experts 1 --seed 3 >/dev/null 2>err.txt
if "$BIN" inspect v3.safetensors --no-tensors >out.txt 2>&1 && grep -q "router sigmoid, route scale 2.5, groups 4 (keep 2), selection bias yes" out.txt &&
   grep -q "experts swiglu, shared experts 1" out.txt; then ok "init + inspect DeepSeek-V3-style"; else bad "init v3" "$(cat out.txt err.txt)"; fi
# the model flags come from the config field list: its ranges, names and help
expect "init: --experts out of range" 2 "--experts '0' must be an integer in 1..4096" "$BIN" init --out bad.safetensors --experts 0
expect "init: unknown router" 2 "--router 'magic': expected seed, softmax or sigmoid" "$BIN" init --out bad.safetensors --router magic
expect "init: --route-scale" 2 "--route-scale '-1' must be a number in \\(0, 1e\\+06\\]" "$BIN" init --out bad.safetensors --route-scale -1
expect "init: cross-field rule" 2 "top-k 9 out of range \\(1..experts = 8\\)" "$BIN" init --out bad.safetensors --top-k 9
if "$BIN" init --help >out.txt && grep -q "^  --shared-hidden H    hidden width of a shared expert" out.txt &&
   grep -q "^  --norm-topk          softmax router" out.txt && ! grep -q -- "--ln-eps\|--in-dim" out.txt; then
    ok "init --help: model flags"; else bad "init --help: model flags" "$(cat out.txt)"; fi
npy_file x.npy '<f4' '(1024, 512)' $((1024 * 512 * 4))
if "$BIN" infer --model m.safetensors --input x.npy --output y.npy --routing r.npy --threads 2 >out.txt 2>err.txt &&
   grep -q "rows/s" out.txt && [ "$(stat -c %s y.npy)" -eq $((128 + 1024 * 512 * 4)) ] &&
   [ "$(stat -c %s r.npy)" -eq $((128 + 1024 * 4 * 4)) ]; then
    ok "infer 1024 rows"; else bad "infer 1024 rows" "$(cat out.txt err.txt)"; fi
npy_file x64.npy '<f8' '(3, 512)' $((3 * 512 * 8))
if "$BIN" infer --model m.safetensors --input x64.npy --output y64.npy --quiet 2>err.txt && [ ! -s err.txt ]; then
    ok "infer float64 input"; else bad "infer float64 input" "$(cat err.txt)"; fi
npy_file x0.npy '<f4' '(0, 512)' 0
if "$BIN" infer --model m.safetensors --input x0.npy --output y0.npy --quiet 2>err.txt; then
    ok "infer zero rows"; else bad "infer zero rows" "$(cat err.txt)"; fi
if "$BIN" demo --batch 64 --iters 2 --threads 1 >out.txt 2>&1 && grep -q "expert utilization" out.txt &&
   grep -qE "max relative difference [0-9.]+e-0[6-9]" out.txt; then ok "demo"; else bad "demo" "$(cat out.txt)"; fi

"$BIN" bench --batch 64 --iters 2 --threads 1 --json >out.txt 2>err.txt
keys_ok=1
for k in batch threads mode rows_per_s gflops us_p50 us_p99 peak_gflops fraction_of_peak; do grep -q "\"$k\":" out.txt || keys_ok=0; done
[ "$keys_ok" = 1 ] && ok "bench --json" || bad "bench --json" "$(cat out.txt err.txt)"
"$BIN" bench --model v3.safetensors --mode train --batch 32 --iters 2 --threads 2 >out.txt 2>err.txt &&
    grep -q "training step, batch 32" out.txt && ok "bench --mode train" || bad "bench --mode train" "$(cat out.txt err.txt)"
expect "bench: bad mode" 2 "--mode 'fast'" "$BIN" bench --mode fast

if "$BIN" export --model m.safetensors --repository repo >out.txt 2>err.txt && [ -s repo/moe_model/1/model.safetensors ] &&
   grep -q 'name: "moe_model"' repo/moe_model/config.pbtxt && grep -q 'max_batch_size: 64' repo/moe_model/config.pbtxt &&
   grep -q 'dims: \[ 512 \]' repo/moe_model/config.pbtxt && "$BIN" inspect repo/moe_model/1/model.safetensors >/dev/null; then
    ok "export a model repository"; else bad "export a model repository" "$(cat out.txt err.txt repo/moe_model/config.pbtxt 2>/dev/null | head -c 600)"; fi
expect "export: bad name" 2 "--name 'a/b'" "$BIN" export --model m.safetensors --repository repo --name a/b

# ---------------------------------------------------------------- bad model files
expect "model: missing file" 1 "nope.safetensors: .*(No such file|cannot open)" "$BIN" infer --model nope.safetensors --input x.npy --output o.npy
: >empty.safetensors
expect "model: empty file" 1 "empty.safetensors: .*(short|truncated|8 bytes)" "$BIN" infer --model empty.safetensors --input x.npy --output o.npy
head -c 1000 m.safetensors >trunc.safetensors
expect "model: truncated file" 1 "trunc.safetensors: .*(exceeds|past|truncated|beyond)" "$BIN" infer --model trunc.safetensors --input x.npy --output o.npy
{ u64le 999999999; printf '{}'; } >hlen.safetensors
expect "model: header length past the end" 1 "hlen.safetensors: .*999999999" "$BIN" inspect hlen.safetensors
st_file json.safetensors '{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]' 4
expect "model: malformed JSON" 1 "json.safetensors: .*JSON" "$BIN" inspect json.safetensors
st_file range.safetensors '{"gating.gate.weight": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}' 8
expect "model: offsets out of range" 1 "range.safetensors: .*gating.gate.weight" "$BIN" inspect range.safetensors
st_file overlap.safetensors '{"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}, "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}}' 24
expect "model: overlapping tensors" 1 "overlap.safetensors: .*overlap" "$BIN" inspect overlap.safetensors
st_file dtype.safetensors '{"a": {"dtype": "F99", "shape": [4], "data_offsets": [0, 16]}}' 16
expect "model: unknown dtype" 1 "dtype.safetensors: .*F99" "$BIN" inspect dtype.safetensors
st_file size.safetensors '{"a": {"dtype": "F32", "shape": [5], "data_offsets": [0, 16]}}' 16
expect "model: shape/size mismatch" 1 "size.safetensors: .*\\ba\\b" "$BIN" inspect size.safetensors
st_file i64.safetensors '{"gating.gate.weight": {"dtype": "I64", "shape": [2, 4], "data_offsets": [0, 64]}, "gating.gate.bias": {"dtype": "F32", "shape": [2], "data_offsets": [64, 72]}, "experts.0.net.0.weight": {"dtype": "F32", "shape": [2, 4], "data_offsets": [72, 104]}}' 104
expect "model: incomplete file refused before building" 1 "i64.safetensors: the config describes 14 tensors .* cannot be this model" "$BIN" inspect i64.safetensors
# a tiny seed model D=4 E=2 H=2 with one tensor missing, then one extra
W='"gating.gate.weight": {"dtype": "F32", "shape": [2, 4], "data_offsets": [0, 32]}, "gating.gate.bias": {"dtype": "F32", "shape": [2], "data_offsets": [32, 40]}'
o=40
for e in 0 1; do
    for spec in "net.0.weight:2,4" "net.0.bias:2" "net.2.weight:2" "net.2.bias:2" "net.3.weight:4,2" "net.3.bias:4"; do
        n=${spec%%:*}; s=${spec#*:}; c=1; for d in ${s//,/ }; do c=$((c * d)); done
        W="$W, \"experts.$e.$n\": {\"dtype\": \"F32\", \"shape\": [$s], \"data_offsets\": [$o, $((o + 4 * c))]}"
        o=$((o + 4 * c))
    done
done
st_file tiny.safetensors "{$W}" $o
npy_file x4.npy '<f4' '(2, 4)' 32
if "$BIN" infer --model tiny.safetensors --input x4.npy --output y4.npy --quiet 2>err.txt; then ok "tiny seed state dict loads"; else bad "tiny seed state dict loads" "$(cat err.txt)"; fi
expect "model: --top-k larger than E" 1 "top-k 3 exceeds the model's 2 experts" "$BIN" infer --model tiny.safetensors --input x4.npy --output y4.npy --top-k 3
st_file extra.safetensors "{$W, \"experts.5.w9\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [$o, $((o + 4))]}}" $((o + 4))
expect "model: extra tensor" 1 "extra.safetensors: unexpected tensor experts.5.w9" "$BIN" infer --model extra.safetensors --input x4.npy --output y4.npy
# the tiny model with its last tensor stored as I64: refused by dtype, naming it
W3=$(printf '%s' "$W" | sed -E "s/\"experts.1.net.3.bias\": \{[^}]*\}/\"experts.1.net.3.bias\": {\"dtype\": \"I64\", \"shape\": [4], \"data_offsets\": [$((o - 16)), $((o + 16))]}/")
st_file i64b.safetensors "{$W3}" $((o + 16))
expect "model: integer weights" 1 "i64b.safetensors: .*experts.1.net.3.bias.*I64" "$BIN" inspect i64b.safetensors
W2=$(printf '%s' "$W" | sed -E 's/, "experts.1.net.2.bias": \{[^}]*\}//')
st_file missing.safetensors "{$W2}" $o
expect "model: missing tensor" 1 "missing.safetensors: missing tensor experts.1.net.2.bias" "$BIN" infer --model missing.safetensors --input x4.npy --output y4.npy

# ---------------------------------------------------------------- bad inputs
expect "input: missing file" 1 "nothere.npy" "$BIN" infer --model tiny.safetensors --input nothere.npy --output bad_out.npy
printf 'NOTNUMPY........' >magic.npy
expect "input: bad magic" 1 "magic.npy: .*(magic|not a .npy)" "$BIN" infer --model tiny.safetensors --input magic.npy --output bad_out.npy
npy_file short.npy '<f4' '(2, 4)' 20
expect "input: truncated data" 1 "short.npy: .*(20|truncated)" "$BIN" infer --model tiny.safetensors --input short.npy --output bad_out.npy
head -c 30 x4.npy >hdr.npy
expect "input: truncated header" 1 "hdr.npy: " "$BIN" infer --model tiny.safetensors --input hdr.npy --output bad_out.npy
npy_file int.npy '<c8' '(2, 4)' 64
expect "input: complex dtype" 1 "int.npy: .*<c8" "$BIN" infer --model tiny.safetensors --input int.npy --output bad_out.npy
npy_file be.npy '>f4' '(2, 4)' 32
expect "input: big-endian" 1 "be.npy: .*>f4" "$BIN" infer --model tiny.safetensors --input be.npy --output bad_out.npy
npy_file d3.npy '<f4' '(1, 2, 4)' 32
expect "input: 3-D" 1 "d3.npy: " "$BIN" infer --model tiny.safetensors --input d3.npy --output bad_out.npy
npy_file wide.npy '<f4' '(2, 5)' 40
expect "input: width differs from D" 1 "wide.npy: rows have 5 values, but the model's input width is 4" "$BIN" infer --model tiny.safetensors --input wide.npy --output bad_out.npy
{ head -c 128 x4.npy; head -c 20 /dev/zero; printf '\000\000\300\177'; head -c 8 /dev/zero; } >nan.npy
expect "input: NaN" 1 "nan.npy: input row 1, column 1 is NaN" "$BIN" infer --model tiny.safetensors --input nan.npy --output bad_out.npy
[ ! -e bad_out.npy ] && ok "no output written on error" || bad "no output written on error" "bad_out.npy exists"
expect "output: unwritable" 1 "/nonexistent/y.npy" "$BIN" infer --model tiny.safetensors --input x4.npy --output /nonexistent/y.npy

# ---------------------------------------------------------------- train / eval / resume
SYN="synthetic:regimes=4,dim=8,rows=3000"
T1="--data $SYN --experts 4 --hidden 8 --steps 40 --batch 32 --warmup 5 --log-every 10 --threads 2 --seed 3"
if "$BIN" train $T1 --out run_a --balance switch,aux_free >out.txt 2>err.txt && [ -s run_a/model.safetensors ] &&
   [ -s run_a/checkpoint/state.safetensors ] && grep -q "regime purity" out.txt; then
    ok "train synthetic regression"; else bad "train synthetic regression" "$(tail -c 400 out.txt) $(cat err.txt)"; fi
[ "$(head -n 1 out.txt)" = "data: 2700 train rows, 300 held out (--holdout 0.1)" ] &&
    ok "train: the first line says how many rows were held out" || bad "train: held-out line" "$(head -n 1 out.txt)"
keys_ok=1
for k in step epoch loss balance_loss lr grad_norm rows_per_s expert_load expert_utilization max_vio; do
    head -n 1 run_a/metrics.jsonl | grep -q "\"$k\":" || keys_ok=0
done
tail -n 1 run_a/metrics.jsonl | grep -q '"eval":true' || keys_ok=0
tail -n 1 run_a/metrics.jsonl | grep -q '"routing_accuracy":' || keys_ok=0
[ "$keys_ok" = 1 ] && [ "$(grep -c . run_a/metrics.jsonl)" -eq 5 ] && ok "metrics.jsonl keys" || bad "metrics.jsonl keys" "$(head -c 600 run_a/metrics.jsonl)"
"$BIN" train $T1 --out run_b --balance switch,aux_free --stop-at 20 >out.txt 2>err.txt
grep -q "stopped at step 20 of 40" out.txt && ok "--stop-at" || bad "--stop-at" "$(tail -c 300 out.txt) $(cat err.txt)"
"$BIN" train --data $SYN --resume run_b >out.txt 2>err.txt  # the run's own settings come back
if grep -q "resumed at step 20" out.txt && cmp -s run_a/model.safetensors run_b/model.safetensors; then
    ok "N straight == N/2 + resume + N/2 (byte-identical model)"; else bad "resume byte-identical" "$(tail -c 300 out.txt) $(cat err.txt)"; fi
# --precision bf16: the same run in mixed precision; resumes byte-identically (the run state keeps it)
"$BIN" train $T1 --out run_p --balance switch,aux_free --precision bf16 >out.txt 2>err.txt
"$BIN" train $T1 --out run_q --balance switch,aux_free --precision bf16 --stop-at 20 >/dev/null 2>>err.txt
"$BIN" train --data $SYN --resume run_q >out.txt 2>>err.txt
if [ -s run_p/model.safetensors ] && cmp -s run_p/model.safetensors run_q/model.safetensors &&
   ! cmp -s run_a/model.safetensors run_p/model.safetensors; then
    ok "train --precision bf16: its own model, resumed byte-identically"; else bad "train --precision bf16" "$(cat err.txt)"; fi
expect "train: bad --precision" 2 "--precision 'fp16': expected fp32 or bf16" "$BIN" train --data $SYN --out run_e --precision fp16
expect "bench: --precision needs train mode" 2 "--precision needs --mode train" "$BIN" bench --precision bf16
"$BIN" eval --model run_a/model.safetensors --data $SYN --seed 3 --json >out.txt 2>err.txt
last=$(tail -n 1 out.txt)
if echo "$last" | grep -q '"mse":' && echo "$last" | grep -q '"expert_utilization":' && echo "$last" | grep -q '"routing_accuracy":' &&
   echo "$last" | grep -q '"expert_load":\[\[' && echo "$last" | grep -q '"max_vio":' && echo "$last" | grep -q '"loss":'; then
    ok "eval --json"; else bad "eval --json" "$last $(cat err.txt)"; fi
# the model file records its training seed: eval of synthetic data uses it when --seed is not given
"$BIN" eval --model run_a/model.safetensors --data $SYN --json >out_s.txt 2>err.txt
"$BIN" eval --model run_a/model.safetensors --data $SYN --seed 0 --json >out_0.txt 2>>err.txt
if [ "$(tail -n 1 out_s.txt)" = "$last" ] && [ "$(tail -n 1 out_0.txt)" != "$last" ] &&
   grep -q "data seed 3, the model's training seed" out_s.txt; then
    ok "eval: synthetic data from the model's training seed"; else bad "eval: training seed" "$(head -n 1 out_s.txt) $(cat err.txt)"; fi

# --holdout: the share of a set without a test split that is held out; 0 trains on every row
"$BIN" train $T1 --out run_h --holdout 0.2 --steps 5 >out.txt 2>err.txt &&
    [ "$(head -n 1 out.txt)" = "data: 2400 train rows, 600 held out (--holdout 0.2)" ] && grep -q "^test: " out.txt &&
    "$BIN" eval --model run_h/model.safetensors --data $SYN >out_e.txt 2>>err.txt && grep -q "(600 rows held out by --holdout 0.2" out_e.txt &&
    ok "train --holdout 0.2 (and eval holds out the same rows)" || bad "train --holdout 0.2" "$(head -n 1 out.txt) $(head -n 1 out_e.txt 2>/dev/null) $(cat err.txt)"
"$BIN" train $T1 --out run_h0 --holdout 0 --steps 5 >out.txt 2>err.txt &&
    [ "$(head -n 1 out.txt)" = "data: 3000 train rows, 0 held out (--holdout 0): no evaluation" ] &&
    grep -q "no rows held out (--holdout 0): no evaluation" out.txt && ! grep -q '"eval":true' run_h0/metrics.jsonl &&
    ok "train --holdout 0: every row trains, no evaluation" || bad "train --holdout 0" "$(cat out.txt err.txt | head -c 500)"
npy_file hx.npy '<f4' '(20, 4)' 320; npy_file hy.npy '<f4' '(20, 4)' 320
"$BIN" train --data hx.npy,hy.npy --out run_hn --holdout 0.25 --experts 2 --hidden 2 --batch 5 --steps 2 --threads 1 >out.txt 2>err.txt &&
    [ "$(head -n 1 out.txt)" = "data: 15 train rows, 5 held out (--holdout 0.25)" ] &&
    ok "train --holdout on X.npy,Y.npy" || bad "train --holdout on npy" "$(head -n 1 out.txt) $(cat err.txt)"
expect "train: --holdout on a set with its own test split" 1 "fashion-mnist: the set has its own test split" "$BIN" train --data fashion-mnist:nowhere --out run_e --holdout 0.1
expect "train: --holdout against synthetic's test=" 1 "test=0.3 and holdout 0.1 disagree" "$BIN" train --data $SYN,test=0.3 --out run_e --holdout 0.1
expect "train: --holdout out of range" 2 "--holdout '1.5' must be a share" "$BIN" train --data $SYN --out run_e --holdout 1.5
"$BIN" train --help | grep -q -- "--holdout F" && ok "train --help: --holdout" || bad "train --help: --holdout" "not listed"

mkdir -p run_c/checkpoint && cp run_b/model.safetensors run_c/
head -c 3000 run_b/checkpoint/state.safetensors >run_c/checkpoint/state.safetensors
expect "resume: truncated checkpoint" 1 "run_c/checkpoint/state.safetensors: .*(exceeds|past|truncated)" "$BIN" train $T1 --resume run_c
# a resumed run keeps its cadence, and drops metrics records a killed run wrote past its checkpoint
"$BIN" train $T1 --out run_m --balance switch,aux_free --stop-at 20 --checkpoint-every 7 --log-every 5 >/dev/null 2>&1
echo '{"step":33,"loss":1}' >>run_m/metrics.jsonl; printf '{"step":21,"lo' >>run_m/metrics.jsonl
"$BIN" train --data $SYN --resume run_m >out.txt 2>err.txt
steps=$(grep -oE '^\{"step":[0-9]+' run_m/metrics.jsonl | cut -d: -f2 | tr '\n' ' ')
[ "$steps" = "5 10 15 20 25 30 35 40 " ] && cmp -s run_a/model.safetensors run_m/model.safetensors &&
    ok "resume: cadence kept, records past the checkpoint dropped" || bad "resume: cadence and metrics" "steps '$steps' $(cat err.txt)"
# a tampered run state: the CRC is checked first, then every field, naming it
ck() {  # ck NAME EDIT...: run_t/ is run_b/ with its run state edited by tests/ckpt_edit.py
    rm -rf run_t; mkdir -p run_t/checkpoint && cp run_b/model.safetensors run_t/
    /usr/bin/python3 "$SRC/tests/ckpt_edit.py" run_b/checkpoint/state.safetensors run_t/checkpoint/state.safetensors "$@"
}
ck batch=0 --keep-crc
expect "resume: edited run state, old checksum" 1 "state.safetensors: checksum mismatch" "$BIN" train --data $SYN --resume run_t
ck batch=0
expect "resume: batch 0 (was a division by zero)" 1 "run state: field 'batch' is 0, outside \[1, 16777216\]" "$BIN" train --data $SYN --resume run_t
ck batch=-4
expect "resume: negative batch (was a negative allocation)" 1 "field 'batch' is -4" "$BIN" train --data $SYN --resume run_t
ck aug_flip=true
expect "resume: saved flip on non-square data (was a heap overflow)" 1 "the resumed run's shift/flip augmentation needs square images" "$BIN" train --data $SYN --resume run_t
ck lr=0
expect "resume: learning rate 0" 1 "field 'lr' is 0, outside \(0" "$BIN" train --data $SYN --resume run_t
ck total_steps=
expect "resume: missing field" 1 "field 'total_steps' is missing" "$BIN" train --data $SYN --resume run_t
ck magic=1
expect "resume: unknown field" 1 "unknown field 'magic'" "$BIN" train --data $SYN --resume run_t
ck task='"cluster"'
expect "resume: bad enum" 1 "field 'task' must be \"classify\" or \"regress\"" "$BIN" train --data $SYN --resume run_t
ck --raw 01000000000000000000000000000000
expect "resume: raw struct bytes of the old format" 1 "predates this version of deepmoe \(run state version 1" "$BIN" train --data $SYN --resume run_t
ck version=2
expect "resume: an older run-state version" 1 "predates this version of deepmoe \(run state version 2, this one reads 4\): start a new run, or train from its model file with --model run_t/model.safetensors" "$BIN" train --data $SYN --resume run_t
ck version=3 precision=
"$BIN" train --data $SYN --resume run_t >out.txt 2>err.txt && cmp -s run_a/model.safetensors run_t/model.safetensors &&
    ok "resume: a version 3 run state (no precision) resumes as fp32, byte-identically" ||
    bad "resume: version 3 run state" "$(cat err.txt)"
ck precision='"fp16"'
expect "resume: bad precision" 1 "field 'precision' must be \"fp32\" or \"bf16\"" "$BIN" train --data $SYN --resume run_t
ck
"$BIN" train --data $SYN --resume run_t >out.txt 2>err.txt && cmp -s run_a/model.safetensors run_t/model.safetensors &&
    ok "resume: an unedited rewrite still resumes byte-identically (the edit tool is faithful)" ||
    bad "resume: faithful rewrite" "$(cat err.txt)"
# the regression inputs of the fuzz harnesses, through the command line
R=$SRC/tests/fuzz/regress
expect "npy pipe: element count x 4 wraps (was a heap overflow)" 1 "shape is too large" \
    "$BIN" infer --model tiny.safetensors --input <(tail -c +2 $R/npy/pipe-size-wrap) --output bad_out.npy
expect "npy pipe: huge shape, 16 bytes (was a 4 GB allocation)" 1 "data is 16 bytes, shape \(1000000000,\) needs 4000000000" \
    "$BIN" infer --model tiny.safetensors --input <(tail -c +2 $R/npy/pipe-huge-shape) --output bad_out.npy
expect "model: 130-byte file asking for 1024 x 4096 (was minutes, GBs)" 1 "1024 layers of .* more than" timeout 10 "$BIN" inspect $R/model/config-bigger-than-file
expect "model: 128 x 128 config, empty file (was 10 s)" 1 "98560 tensors .* cannot be this model" timeout 10 "$BIN" inspect $R/model/config-128x128

# the default classifier (aux-free balancing by default) resumes exactly with no flags repeated
C1="--data $SYN --task classify --dim 16 --hidden 8 --experts 4 --batch 64 --steps 30 --threads 2"
"$BIN" train $C1 --out cls_a >/dev/null 2>&1
"$BIN" train $C1 --out cls_b --stop-at 15 >/dev/null 2>&1
"$BIN" train --data $SYN --resume cls_b >out.txt 2>err.txt
cmp -s cls_a/model.safetensors cls_b/model.safetensors && ok "classifier resume byte-identical (defaults)" ||
    bad "classifier resume byte-identical (defaults)" "$(tail -c 300 out.txt) $(cat err.txt)"
"$BIN" train --data $SYN --resume cls_a --steps 10 >out.txt 2>err.txt
[ $? -eq 1 ] && grep -q "past --steps 10" err.txt && ok "resume: --steps below the saved step" || bad "resume: --steps below" "$(cat err.txt)"
# a batch far larger than the old fixed task list (was a heap overflow)
"$BIN" train --data synthetic:dim=8,rows=12000 --out big --batch 8192 --steps 2 >out.txt 2>err.txt && ok "train: batch 8192" || bad "train: batch 8192" "$(cat err.txt)"
expect "train: diverging run" 1 "diverged at step" "$BIN" train --data $SYN --out dv --steps 50 --lr 1e6 --clip 0 --warmup 0
expect "train: unknown balance" 2 "--balance 'magic'" "$BIN" train --data $SYN --out run_d --balance magic
expect "train: missing data dir" 1 "nowhere: directory not found; install Debian's dataset-fashion-mnist" "$BIN" train --data fashion-mnist:nowhere --out run_e
expect "train: regression width" 1 "give --dim 8" "$BIN" train --data $SYN --out run_f --dim 16
expect "eval: model does not fit data" 1 "does not fit" "$BIN" eval --model m.safetensors --data $SYN
expect "eval: classify without a head" 1 "has no classifier head" "$BIN" eval --model run_a/model.safetensors --data $SYN --task classify
"$BIN" eval --model cls_a/model.safetensors --data $SYN --json >out.txt 2>err.txt && tail -n 1 out.txt | grep -q '"accuracy":' &&
    ok "eval: task from the model's head" || bad "eval: task from the model's head" "$(tail -n 2 out.txt) $(cat err.txt)"

# ---------------------------------------------------------------- preprocessing belongs to the model
# .npy features over [0, 1000]: the model file carries the train split's map and applies it itself, so
# infer and the server on the raw rows give what eval reports; --normalize none trains on the values as
# given (byte-identical to minmax training on rows scaled beforehand with the model's map, by numpy)
PY=/usr/bin/python3
if ! $PY -c 'import numpy' 2>/dev/null; then
    echo "SKIP preprocessing tests (no numpy for /usr/bin/python3)"
else
cat >st_tool.py <<'EOF'
import json, struct, sys
import numpy as np
def read(path):  # header dict, data section bytes
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    return json.loads(b[8:8 + n]), b[8 + n:]
def tensor(h, data, name):
    o = h[name]["data_offsets"]
    return np.frombuffer(data[o[0]:o[1]], dtype=np.float32).reshape(h[name]["shape"])
def write(path, h, data, drop, drop_meta):  # a copy without the tensors in drop and the keys in drop_meta
    out, parts, at = {}, [], 0
    for k, v in h.items():
        if k == "__metadata__":
            out[k] = {mk: mv for mk, mv in v.items() if mk not in drop_meta}
        elif k not in drop:
            o = v["data_offsets"]
            parts.append(data[o[0]:o[1]])
            out[k] = dict(v, data_offsets=[at, at + o[1] - o[0]])
            at += o[1] - o[0]
    hj = json.dumps(out).encode()
    hj += b" " * (-len(hj) % 8)
    open(path, "wb").write(struct.pack("<Q", len(hj)) + hj + b"".join(parts))
EOF
$PY - <<'EOF'
import numpy as np
rng = np.random.default_rng(7)
n = 400
X = rng.uniform(0, 1000, size=(n, 6)).astype(np.float32)
X[:, 4] = 123.0                                   # a constant feature
y = (X[:, 0] > 500).astype(np.int64) + (X[:, 1] > 500)
np.save("px.npy", X); np.save("py.npy", y)
np.save("px_test.npy", X[n - n // 10:])           # the rows train holds out (--holdout 0.1) and eval scores
np.save("py_test.npy", y[n - n // 10:])
EOF
P="--data px.npy,py.npy --task classify --dim 16 --hidden 8 --experts 4 --layers 1 --batch 30 --steps 40 --lr 0.01 --threads 2 --seed 4 --log-every 20"
"$BIN" train $P --out pre_a >out.txt 2>err.txt && grep -q "features: minmax scaling, stored in the model" out.txt &&
    ok "train .npy over [0, 1000]: minmax by default, stored in the model" || bad "train .npy minmax" "$(cat out.txt err.txt | head -c 500)"
"$BIN" inspect pre_a/model.safetensors --no-tensors >out.txt 2>&1 &&
    grep -qE "preprocess minmax: x \* scale \+ shift per feature \(6\), scale \[0, 0.002[0-9]*\], shift \[-1.0[0-9]*, 0\]" out.txt &&
    ok "inspect shows the preprocessing" || bad "inspect preprocessing" "$(cat out.txt)"
"$BIN" eval --model pre_a/model.safetensors --data px.npy,py.npy --json --threads 1 >out_e.txt 2>err.txt &&
    grep -q "features: raw, scaled by the model's minmax preprocessing" out_e.txt &&
    ok "eval: raw rows to a model that scales them" || bad "eval raw rows" "$(cat out_e.txt err.txt | head -c 500)"
# the run's final evaluation (metrics.jsonl) is eval's on the saved model
ev=$(tail -n 1 out_e.txt | sed -E 's/^\{"oracle_rows":[0-9]+,//')
fin=$(tail -n 1 pre_a/metrics.jsonl | sed -E 's/^\{"eval":true,"step":[0-9]+,//')
[ -n "$ev" ] && [ "$ev" = "$fin" ] && ok "train's final evaluation == deepmoe eval of the saved model" ||
    bad "train eval == eval" "eval '$ev' vs train '$fin'"
"$BIN" infer --model pre_a/model.safetensors --input px_test.npy --output pre_y.npy --threads 2 >out.txt 2>err.txt &&
    grep -q "preprocessing: minmax (the model's, on the raw rows)" out.txt || bad "infer raw rows" "$(cat out.txt err.txt)"
if $PY - "$(tail -n 1 out_e.txt)" <<'EOF'
import json, sys
import numpy as np
ev = json.loads(sys.argv[1])
z = np.load("pre_y.npy").astype(np.float64); y = np.load("py_test.npy")
acc = float(np.mean(z.argmax(1) == y))
m = z.max(1, keepdims=True)
loss = float(np.mean(m[:, 0] + np.log(np.exp(z - m).sum(1)) - z[np.arange(len(y)), y]))
print("infer: accuracy %.6g loss %.6g; eval: accuracy %s loss %s" % (acc, loss, ev["accuracy"], ev["loss"]))
sys.exit(0 if abs(acc - ev["accuracy"]) < 1e-9 and abs(loss - ev["loss"]) <= 1e-5 * abs(ev["loss"]) and acc > 0.7 else 1)
EOF
then ok "infer on the raw rows: accuracy and loss are eval's"; else bad "infer == eval" "see above"; fi
# the server on the same raw rows: the bytes infer wrote
"$BIN" export --model pre_a/model.safetensors --repository pre_repo >/dev/null 2>err.txt || bad "export" "$(cat err.txt)"
if $PY - "$BIN" <<'EOF'
import http.client, json, re, signal, subprocess, sys
import numpy as np
x = np.load("px_test.npy"); want = np.load("pre_y.npy")
p = subprocess.Popen([sys.argv[1], "serve", "--model-repository", "pre_repo", "--http-port", "0", "--metrics-port", "0"],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
try:
    line = p.stdout.readline()
    port = int(re.search(r"HTTP on [0-9.]+:(\d+)", line).group(1))
    header = json.dumps({"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                                     "parameters": {"binary_data_size": x.nbytes}}],
                         "outputs": [{"name": "output", "parameters": {"binary_data": True}}]}).encode()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("POST", "/v2/models/moe_model/infer", header + x.astype("<f4").tobytes(),
              {"Inference-Header-Content-Length": str(len(header))})
    r = c.getresponse(); body = r.read()
    hl = int(r.getheader("Inference-Header-Content-Length", "-1"))
    got = np.frombuffer(body[hl:], dtype="<f4").reshape(want.shape) if r.status == 200 and hl > 0 else None
    ok = got is not None and np.array_equal(got, want)
    print("server: status %d, %s" % (r.status, "bit-identical to infer" if ok else body[:300]))
finally:
    p.send_signal(signal.SIGTERM); p.wait(timeout=30)
sys.exit(0 if ok else 1)
EOF
then ok "serve on the raw rows: infer's outputs, bit for bit"; else bad "serve == infer" "see above"; fi
# a file of an older deepmoe (no preprocessing recorded): eval scales the data the set's way, as before
$PY -c "
import st_tool as s
h, d = s.read('pre_a/model.safetensors')
s.write('pre_old.safetensors', h, d, ('preprocess.scale', 'preprocess.shift'), ('deepmoe.normalize',))"
"$BIN" eval --model pre_old.safetensors --data px.npy,py.npy --json --threads 1 >out.txt 2>err.txt &&
    grep -q "features: scaled minmax by the data loader (the model records no preprocessing)" out.txt &&
    [ "$(tail -n 1 out.txt)" = "$(tail -n 1 out_e.txt)" ] &&
    ok "eval of a file without preprocessing: the loader scales, the same numbers" ||
    bad "eval of an older file" "$(cat out.txt err.txt | head -c 600)"
# --normalize none: the features train as given, and the model records none
"$BIN" train $P --out pre_n --normalize none >out.txt 2>err.txt && grep -q "features: raw (--normalize none)" out.txt &&
    "$BIN" inspect pre_n/model.safetensors --no-tensors | grep -q "preprocess none: raw features" &&
    $PY -c "
import st_tool as s, sys
h, d = s.read('pre_n/model.safetensors')
sys.exit(0 if h['__metadata__'].get('deepmoe.normalize') == 'none' and 'preprocess.scale' not in h and 'preprocess.shift' not in h else 1)" &&
    ok "train --normalize none: no map, the file says none" || bad "train --normalize none" "$(cat out.txt err.txt | head -c 500)"
$PY -c "
import numpy as np, st_tool as s
h, d = s.read('pre_a/model.safetensors')
X = np.load('px.npy')
np.save('pxs.npy', X * s.tensor(h, d, 'preprocess.scale') + s.tensor(h, d, 'preprocess.shift'))"
"$BIN" train ${P/px.npy/pxs.npy} --out pre_s --normalize none >/dev/null 2>err.txt
if $PY - <<'EOF'
import sys, st_tool as s
ha, da = s.read("pre_a/model.safetensors"); hs, ds = s.read("pre_s/model.safetensors")
names = [k for k in ha if k != "__metadata__" and not k.startswith("preprocess.")]
same = sorted(names) == sorted(k for k in hs if k != "__metadata__") and \
    all(s.tensor(ha, da, k).tobytes() == s.tensor(hs, ds, k).tobytes() for k in names)
print("%d parameter tensors, %s" % (len(names), "identical" if same else "different"))
sys.exit(0 if same else 1)
EOF
then ok "--normalize none on numpy-scaled rows == minmax on raw rows (every parameter, bit for bit)"
else bad "none on scaled == minmax on raw" "$(cat err.txt)"; fi
"$BIN" train $P --out pre_t --normalize standard >/dev/null 2>&1 && "$BIN" inspect pre_t/model.safetensors --no-tensors |
    grep -q "preprocess standard:" && ok "train --normalize standard" || bad "train --normalize standard" "not recorded"
expect "train: unknown --normalize" 2 "--normalize 'zscore': expected none, minmax, standard or pixel" "$BIN" train $P --out pre_e --normalize zscore
fi

# ---------------------------------------------------------------- quantize
"$BIN" init --out qs.safetensors --dim 32 --experts 4 --hidden 16 >/dev/null
npy_file qx.npy '<f4' '(7, 32)' $((7 * 32 * 4))
for t in bf16 f16 q8 nm24 nm24:bf16 nm24:q8; do
    if "$BIN" quantize --model qs.safetensors --out "q_$t.safetensors" --type "$t" --data qx.npy >out.txt 2>err.txt &&
       grep -q "experts f32 -> $t, router f32 -> f32" out.txt && grep -q "top-k flip rate 0.0000 on 7 rows" out.txt &&
       "$BIN" inspect "q_$t.safetensors" >ins.txt 2>&1 && grep -q "expert weights $t, router f32" ins.txt &&
       grep -qE "experts.0.net.0.weight +\[16, 32\] +$t " ins.txt &&
       "$BIN" infer --model "q_$t.safetensors" --input qx.npy --output qy.npy --quiet 2>>err.txt; then
        ok "quantize --type $t, inspect, infer"; else bad "quantize $t" "$(cat out.txt err.txt ins.txt | head -c 400)"; fi
done
if "$BIN" quantize --model qs.safetensors --out q_g.safetensors --type q8 --group 32 --router same --json >out.txt 2>err.txt &&
   tail -1 out.txt | grep -q '"type":"q8","router":"q8","embed":"f32","group":32'; then ok "quantize q8 --group 32 --router same --json"
else bad "quantize --group" "$(cat out.txt err.txt)"; fi
if "$BIN" quantize --model q_q8.safetensors --out q_back.safetensors --type f32 >out.txt 2>err.txt &&
   grep -q "experts q8 -> f32" out.txt && "$BIN" inspect q_back.safetensors --no-tensors | grep -q "expert weights f32"; then
    ok "quantize --type f32 dequantizes"; else bad "dequantize" "$(cat out.txt err.txt)"; fi
expect "quantize: unknown type" 1 "unknown weight type \"q3\"" "$BIN" quantize --model qs.safetensors --out bad.safetensors --type q3
expect "quantize: --group on bf16" 2 "--group applies to --type q8 only" "$BIN" quantize --model qs.safetensors --out bad.safetensors --type bf16 --group 32
expect "quantize: bad --group" 2 "--group '48' must be 32, 64 or 128" "$BIN" quantize --model qs.safetensors --out bad.safetensors --type q8 --group 48
expect "quantize: --router" 2 "--router 'int8': expected f32 or same" "$BIN" quantize --model qs.safetensors --out bad.safetensors --type q8 --router int8
expect "quantize: required" 2 "--model, --out and --type are required" "$BIN" quantize --model qs.safetensors
"$BIN" init --out q6.safetensors --dim 18 --experts 4 --hidden 8 >/dev/null
expect "quantize: nm24 needs K % 4" 1 "multiple of 4, but experts.0.net.0.weight is \[8, 18\]" "$BIN" quantize --model q6.safetensors --out bad.safetensors --type nm24
expect "quantize: --data of another width" 1 "has 32 features per row, the model takes 18" "$BIN" quantize --model q6.safetensors --out bad.safetensors --type q8 --data qx.npy
expect "train refuses a q8 model" 1 "holds compressed \(q8\) expert weights: training needs fp32" "$BIN" train --data synthetic:dim=32,rows=500 --out qtr --model q_q8.safetensors --steps 2
expect "keep-sparsity on a dense model" 1 "is not 2:4 sparse .* deepmoe quantize --type nm24" "$BIN" train --data synthetic:dim=32,rows=500 --out qtr --model qs.safetensors --keep-sparsity --steps 2
if "$BIN" train --data synthetic:dim=32,rows=500 --out qsp --model q_nm24:bf16.safetensors --keep-sparsity --steps 3 >out.txt 2>err.txt &&
   "$BIN" inspect qsp/model.packed.safetensors --no-tensors | grep -q "expert weights nm24:bf16" &&
   "$BIN" inspect qsp/model.safetensors --no-tensors | grep -q "expert weights f32"; then
    ok "train --keep-sparsity: fp32 run model, nm24:bf16 packed copy"; else bad "keep-sparsity" "$(cat out.txt err.txt | tail -3)"; fi

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
