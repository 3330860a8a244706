#!/usr/bin/env bash
# Every GPU path of the project, once, on one CUDA machine: a table of PASS / FAIL / SKIP with a
# figure per check. CPU machines and CI run the same graphs on the CPU; this is where the GPU side
# (DALI's nvJPEG decoding, audio features on the device, Triton kernels, NCCL) is exercised.
#
#   scripts/gpu_check.sh            # a few minutes on one H100; exits 1 when a check FAILs
#
# Each check runs in its own process under a time limit, so one failure or hang never hides the
# others. Data are synthesised and built in a temporary folder (removed at exit; KEEP=1 keeps it).
set -uo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-.venv/bin/python}
[[ -x "$PYTHON" ]] || PYTHON=$(command -v python3)
BIN=$(dirname "$PYTHON")
WORK=$(mktemp -d "${TMPDIR:-/tmp}/inforeg-gpu-check.XXXXXX")
DATA="$WORK/data"
RESULTS="$WORK/results.tsv"
LIMIT=${LIMIT:-240}   # seconds per check
: >"$RESULTS"
cleanup() { if [[ "${KEEP:-0}" == 1 ]]; then echo "kept $WORK"; else rm -rf "$WORK"; fi; }
trap cleanup EXIT

# record NAME STATUS FIGURE
record() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$RESULTS"; printf '%-26s %-5s %s\n' "$1" "$2" "$3"; }

# run_check NAME FUNCTION [LIMIT]: the function (exported, run in its own bash under the time
# limit) prints a last line "STATUS<TAB>FIGURE".
export PYTHON BIN WORK DATA
run_check() {
    local name=$1 func=$2 limit=${3:-$LIMIT}
    local log="$WORK/$name.log" line status figure rc
    export -f "${func?}"
    timeout --kill-after=10 "$limit" bash -c "$func" >"$log" 2>&1
    rc=$?
    line=$(grep -E $'^(PASS|FAIL|SKIP)\t' "$log" | tail -n 1)
    if [[ $rc -eq 124 || $rc -eq 137 ]]; then
        record "$name" FAIL "timed out after ${limit}s (log: $log)"
    elif [[ -n "$line" ]]; then
        status=${line%%$'\t'*}; figure=${line#*$'\t'}
        [[ $rc -ne 0 && "$status" == PASS ]] && status=FAIL figure="$figure; exit $rc"
        record "$name" "$status" "$figure"
    else
        record "$name" FAIL "exit $rc: $(tail -n 3 "$log" | tr '\n' ' ' | cut -c1-160)"
    fi
}

# --- 0. the device -------------------------------------------------------------------------------
if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null
then
    record cuda SKIP "no CUDA device visible to torch: every GPU check skipped"
    exit 0
fi
record cuda PASS "$("$PYTHON" -c 'import torch; p = torch.cuda.get_device_properties(0);
print(f"{p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, CUDA {torch.version.cuda}")')"

# --- 1. data: CREMA-D-shaped synthetic clips (2.5 s, 22.05 kHz audio), built to 256-px frames ----
data_log="$WORK/data.log"
CORES=$(nproc)
synth=(synth --out "$WORK/raw" --samples 512 --classes 6 --seed 0 --width 320 --height 240
       --seconds 2.5 --fps 30 --val-fraction 0.0 --test-fraction 0.125 --workers "$CORES")
build=(build --manifest "$WORK/raw/manifest.csv" --out "$DATA" --formats dali,ffcv --shard-size 128
       --workers "$CORES" --quiet)
timeout "$LIMIT" "$BIN/inforeg-preprocess" "${synth[@]}" >"$data_log" 2>&1 &&
    timeout "$LIMIT" "$BIN/inforeg-preprocess" "${build[@]}" >>"$data_log" 2>&1
rc=$?
if [[ $rc -eq 0 ]]; then
    record data PASS "512 clips 320x240 -> $(du -sh "$DATA/dali" | cut -f1) of DALI shards, 256-px frames"
elif [[ $rc -eq 124 ]]; then
    record data FAIL "synth/build timed out after ${LIMIT}s (log: $data_log)"
else
    record data FAIL "synth/build exit $rc: $(tail -n 2 "$data_log" | tr '\n' ' ' | cut -c1-160)"
fi
# The DALI checks need the data; without it they fail at once, naming why.
with_data() { [[ -f "$DATA/dataset.json" ]] || { printf 'FAIL\tno data (see the data check)\n'; return 1; }; }
export -f with_data

# --- 2. DALI: nvJPEG ("mixed") decoding against the CPU graph ------------------------------------
dali_mixed() {
    with_data || return 1
    "$PYTHON" - "$DATA" <<'EOF'
import sys, torch
from pipelines.contract import LoaderSpec
from pipelines.dali import DaliLoader

def epoch(device, train):
    spec = LoaderSpec(pipeline="dali", data_dir=sys.argv[1], split="test", train=train,
                      batch_size=16, workers=4, device=device, finish=False, seed=5)
    # The CPU decodes whole frames too: the GPU's graph, with libjpeg-turbo and OpenCV.
    loader = DaliLoader(spec, whole_frame=True)
    return [{k: v.cpu() for k, v in b.items()} for b in loader]

lines, ok = [], True
for train in (False, True):
    cpu, gpu = epoch("cpu", train), epoch("cuda", train)
    same = len(cpu) == len(gpu) and all(torch.equal(x["index"], y["index"]) for x, y in zip(cpu, gpu))
    d = torch.cat([(x["video"].float() - y["video"].float()).abs().flatten()
                   for x, y in zip(cpu, gpu)])
    # IDCT and chroma upsampling differ between nvJPEG and libjpeg-turbo, and CV-CUDA's bilinear
    # from OpenCV's in rounding: a few 8-bit levels; a wrong crop or flip gives tens.
    ok &= same and d.mean().item() < 1.5 and d.max().item() <= 24
    lines.append(f"{'train' if train else 'eval'}: same samples {same}, |GPU - CPU| mean "
                 f"{d.mean():.2f} max {d.max():.0f}")
print(f"{'PASS' if ok else 'FAIL'}\t" + "; ".join(lines) + " (8-bit levels; limits 1.5, 24)")
EOF
}
run_check dali-mixed-decode dali_mixed

# --- 3. audio features on the GPU (torch.stft, the contract's finish_batch) -----------------------
audio_features() {
    with_data || return 1
    "$PYTHON" - "$DATA" <<'EOF'
import sys, torch
from pipelines.contract import LoaderSpec, finish_batch
from pipelines.dali import DaliLoader

spec = LoaderSpec(pipeline="dali", data_dir=sys.argv[1], split="test", train=False,
                  batch_size=32, workers=4, finish=False)
loader = DaliLoader(spec)
raw = next(iter(loader))
cpu = finish_batch(raw, loader.info, "cpu")["audio"]
gpu = finish_batch(raw, loader.info, "cuda")["audio"].cpu()
rel = ((gpu - cpu).abs() / cpu.abs().clamp_min(1e-3)).max().item()
# cuFFT vs pocketfft: float32 rounding; the contract allows 1e-4 relative between loaders.
ok = gpu.shape == cpu.shape and torch.allclose(gpu, cpu, rtol=1e-4, atol=1e-4)
print(f"{'PASS' if ok else 'FAIL'}\t{tuple(gpu.shape)} log-STFT, max relative error {rel:.2e} "
      f"(rtol 1e-4, atol 1e-4)")
EOF
}
run_check gpu-audio-features audio_features

# --- 4. DALI loader throughput: GPU (nvJPEG + device stage) vs CPU, equal threads ----------------
dali_throughput() {
    with_data || return 1
    "$PYTHON" - "$DATA" <<'EOF'
import sys, time, torch
from pipelines.contract import LoaderSpec
from pipelines.dali import DaliLoader

def rate(device, workers, epochs=3):
    spec = LoaderSpec(pipeline="dali", data_dir=sys.argv[1], split="train", train=True,
                      batch_size=64, workers=workers, device=device)
    loader = DaliLoader(spec)
    for _ in loader:  # warm-up epoch: allocations, nvJPEG and CUDA initialisation
        pass
    sync = torch.cuda.synchronize if device != "cpu" else (lambda: None)
    sync()
    start, n = time.perf_counter(), 0
    for e in range(1, epochs + 1):  # each epoch builds its pipeline: counted, as in training
        loader.set_epoch(e)
        for batch in loader:
            n += batch["index"].numel()
    sync()
    return n / (time.perf_counter() - start)

workers = 8
gpu, cpu = rate("cuda", workers), rate("cpu", workers)
ok = gpu > cpu
print(f"{'PASS' if ok else 'FAIL'}\tDALI GPU {gpu:,.0f} samples/s vs DALI CPU {cpu:,.0f} samples/s "
      f"({gpu / cpu:.1f}x), {workers} threads, batch 64, full contract on the device")
EOF
}
run_check dali-throughput dali_throughput

# --- 4b. FFCV feeding the GPU: the full contract with the device stage on CUDA -----------------------
# FFCV decodes on the host (uint8) and hands pinned buffers to the GPU, where normalisation and the
# STFT run; the figure to compare with a training step's samples/s.
ffcv_device() {
    with_data || return 1
    local json="$WORK/ffcv.json"
    "$BIN/inforeg-bench" loader --pipeline ffcv --data "$DATA" --split train --batch-size 64 \
        --workers 8 --batches 40 --device cuda --stage device --json "$json" >/dev/null || return 1
    "$PYTHON" - "$json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"PASS\tFFCV -> CUDA device stage: {r['samples_per_s']:,.0f} samples/s, batch p50 "
      f"{r['p50_batch_s'] * 1e3:.1f} ms, p95 {r['p95_batch_s'] * 1e3:.1f} ms (8 threads, batch 64)")
EOF
}
run_check ffcv-device-stage ffcv_device

# --- 5. every gpu-marked test of the project ------------------------------------------------------
gpu_tests() {
    local log="$WORK/pytest-gpu.log"
    "$PYTHON" -m pytest -q -m gpu -p no:cacheprovider tests >"$log" 2>&1
    local rc=$? summary
    summary=$(grep -E '(passed|failed|error|skipped|no tests ran)' "$log" | tail -n 1)
    if [[ $rc -eq 0 ]]; then printf 'PASS\t%s\n' "$summary"
    elif [[ $rc -eq 5 ]]; then printf 'SKIP\tno gpu-marked tests collected\n'
    else printf 'FAIL\t%s (log: %s)\n' "$summary" "$log"; fi
}
run_check pytest-gpu gpu_tests $((2 * LIMIT))

# --- 6. the regulator's Triton kernel: bandwidth vs a device-to-device copy ----------------------
# `flat` on CUDA is one Triton launch (update + per-modality reduction); target: >= 70% of the
# bandwidth of a same-size device-to-device copy, on two ResNet-18 encoders (22.3 M parameters).
regulator_triton() {
    local json="$WORK/regulator.json"
    "$BIN/inforeg-bench" regulator --device cuda --impl flat foreach reference --repeat 50 \
        --no-official --json "$json" || return 1
    "$PYTHON" - "$json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
share = r["gbps"] / r["copy_gbps"]
step = r.get("pct_of_train_step")
print(f"{'PASS' if share >= 0.7 else 'FAIL'}\tTriton flat {r['ms_per_call']:.3f} ms/call, "
      f"{r['gbps']:.0f} GB/s = {share:.0%} of a D2D copy ({r['copy_gbps']:.0f} GB/s; target 70%)"
      + ("" if step is None else f"; {step:.2f}% of a ResNet-18 training step"))
EOF
}
run_check regulator-triton regulator_triton

# --- 7. DeepSpeed over NCCL: the trainer on one GPU, ZeRO-2 + bf16, DALI mixed decoding ------------
# Every piece of a cluster run at once: the deepspeed launcher, NCCL, ZeRO-2's flat fp32 partitions
# with the regulator's Triton pass in the base optimizer's pre-step hook, bf16, DALI on the GPU.
deepspeed_nccl() {
    with_data || return 1
    local out="$WORK/train" log="$WORK/train.log"
    "$BIN/deepspeed" --num_gpus 1 launch/train.py --config configs/synthetic.yaml \
        --deepspeed_config deepspeed_configs/zero2.json,deepspeed_configs/bf16.json \
        data.dir="$DATA" data.pipeline=dali data.size=112 data.batch_size=32 data.workers=4 \
        regulator.name=inforeg regulator.schedule=always run.epochs=2 run.log_every=2 \
        run.progress=false run.out_dir="$out" >"$log" 2>&1 || { printf 'FAIL\tsee %s\n' "$log"; return 1; }
    "$PYTHON" - "$out" <<'EOF'
import json, sys
from pathlib import Path
from studies.audit import audit_run
out = Path(sys.argv[1])
records = [json.loads(l) for l in (out / "metrics.jsonl").open()]
steps = [r for r in records if r["kind"] == "step"]
epochs = [r for r in records if r["kind"] == "epoch"]
problems = audit_run(out)
regulated = sum(1 for r in steps if any(v for k, v in r.items() if k.startswith("regulated.")))
ok = not problems and len(epochs) == 2 and regulated > 0
print(f"{'PASS' if ok else 'FAIL'}\tNCCL ZeRO-2 bf16 DALI-GPU: {steps[-1]['step'] + 1} steps, loss "
      f"{steps[0]['loss']:.3f} -> {steps[-1]['loss']:.3f}, {steps[-1]['samples_per_s']:.0f} "
      f"samples/s, {regulated} logged steps regulated, audit: {len(problems)} problem(s)")
EOF
}
run_check deepspeed-nccl deepspeed_nccl

# --- the table -----------------------------------------------------------------------------------
echo
printf '%-26s %-5s %s\n' CHECK STATUS FIGURE
printf '%s\n' "------------------------------------------------------------------------------------------"
while IFS=$'\t' read -r name status figure; do printf '%-26s %-5s %s\n' "$name" "$status" "$figure"; done <"$RESULTS"
! grep -q $'\tFAIL\t' "$RESULTS"
