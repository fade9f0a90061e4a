#!/usr/bin/env bash
# GPU check (issues #13, #33): CUDA tests, step/epoch benchmarks against the authors-style reference on the
# same GPU, the captured vs eager training step, paper-recipe epochs of fit eager and captured, then (with
# RUN_STUDY=1) the GPU study; every figure written to one folder.
#
#   scripts/gpu-check.sh [OUT_DIR]        (default: gpu-check-<date>/ in the current folder)
#
# Writes OUT_DIR/{info.txt, tests.txt, train.json, eval.json, profile.txt, paper-epoch.jsonl,
# paper-graph-epoch.jsonl, execution.json, epoch.json, steps.txt, summary.txt, *.log} (+ study/ with
# RUN_STUDY=1) and prints the summary last. The figures go to docs/performance.md with the GPU's name.
#
# Needs: a CUDA GPU, this repository importable (python -m micronet_lib), the released checkpoints
# (MICRONET_ASSETS or the cache). Data for the epochs: MICRONET_CIFAR100_SPEC (default "cifar100";
# e.g. "imagefolder:/data/cifar100"); "synthetic" where no copy can be had (no network): then the
# paper epoch runs on 50,000 generated 32x32 images of 10 classes, CIFAR's size, so the timing of an
# epoch holds while its accuracy means nothing.
#
# Sized for a 15-minute GPU lease: each step has its own timeout (seconds, env T_TESTS, T_TRAIN, T_EVAL,
# T_PROFILE, T_PAPER, T_GRAPH, T_EPOCH; 10 minutes in all, T_STUDY 90 more with RUN_STUDY=1), and a step that fails or times
# out is reported (OUT_DIR/steps.txt: name, rc, seconds) and the next one runs; the paper epochs log their
# progress bar every 5 s, so a cut-off epoch still shows its rate in its log. A dry run on a CPU, every step small:
#   DEVICE=cpu MICRONET_CIFAR100_SPEC=synthetic PAPER_PER_CLASS=20 BENCH_STEPS=1 BENCH_ROUNDS=1 scripts/gpu-check.sh
set -uo pipefail
OUT=${1:-gpu-check-$(date -u +%Y%m%dT%H%MZ)}
PY=${PYTHON:-python}
DATA=${MICRONET_CIFAR100_SPEC:-cifar100}
DEVICE=${DEVICE:-cuda}
BENCH=(--steps "${BENCH_STEPS:-10}" --rounds "${BENCH_ROUNDS:-3}" --warmup 2 --json)
REPO=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT"
: >"$OUT/steps.txt"
export MICRONET_CACHE=${MICRONET_CACHE:-$OUT/cache} PYTHONUNBUFFERED=1

step() {  # step NAME TIMEOUT COMMAND...: the command's stderr to OUT/NAME.log, its stdout where the caller says
  local name=$1 limit=$2 start=$SECONDS; shift 2
  echo "## $name (limit ${limit}s): $*" >&2
  timeout "$limit" "$@" 2>"$OUT/$name.log"
  local rc=$?
  echo "## $name: rc $rc after $((SECONDS - start)) s" >&2
  echo "$name rc=$rc seconds=$((SECONDS - start)) limit=$limit" >>"$OUT/steps.txt"
  [ $rc -eq 0 ] || tail -n 15 "$OUT/$name.log" >&2
}

{
  echo "# micronet gpu-check $(date -u +%FT%TZ), data $DATA"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader || true
  $PY -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available() and torch.cuda.get_device_name(0), 'bf16', torch.cuda.is_available() and torch.cuda.is_bf16_supported())"
  nproc
} 2>&1 | tee "$OUT/info.txt"

# The CUDA tests first (augmentation on the device, grouped and per image; the captured step vs the eager one;
# a paper-recipe fit): a broken path shows here.
step tests "${T_TESTS:-100}" $PY -m pytest -q -p no:cacheprovider "$REPO/tests/test_cuda.py" >"$OUT/tests.txt"
tail -n 3 "$OUT/tests.txt"
# the step per execution mode vs the authors-style step, and the paper-recipe step eager / CUDA graph / compile
step train "${T_TRAIN:-150}" $PY -m micronet_lib bench train --capture --device "$DEVICE" "${BENCH[@]}" >"$OUT/train.json"
step eval "${T_EVAL:-30}" $PY -m micronet_lib bench eval --device "$DEVICE" "${BENCH[@]}" >"$OUT/eval.json"
[ "$DEVICE" = cuda ] && step profile "${T_PROFILE:-30}" $PY "$REPO/scripts/gpu_profile.py" >"$OUT/profile.txt" \
  && head -n 1 "$OUT/profile.txt" && grep -m 1 "^bf16" "$OUT/profile.txt" && tail -n 1 "$OUT/profile.txt"

# One epoch of the paper recipe (FastAA 4x = 200k samples, CutMix, weighted LS, ortho), mode auto.
SIZE=()
[ "$DATA" = synthetic ] && SIZE=(--set train_per_class=5000 --set test_per_class=1000)
[ -n "${PAPER_PER_CLASS:-}" ] && SIZE=(--set train_per_class="$PAPER_PER_CLASS" --set test_per_class="$PAPER_PER_CLASS")
PAPER=(--profile paper --device "$DEVICE" --set dataset="$DATA" --set epochs_per_cycle=1 --set cycles=1
  --set precision=auto --set memory_format=auto "${SIZE[@]}")
TQDM_MININTERVAL=5 step paper "${T_PAPER:-110}" $PY -m micronet_lib train "${PAPER[@]}" --runs-dir "$OUT/runs"
cat "$OUT"/runs/*/metrics.jsonl >"$OUT/paper-epoch.jsonl" 2>/dev/null
cp "$OUT"/runs/*/execution.json "$OUT/execution.json" 2>/dev/null
# the same epoch with the whole training step captured as one CUDA graph (TrainConfig.capture_step)
TQDM_MININTERVAL=5 step paper-graph "${T_GRAPH:-110}" $PY -m micronet_lib train "${PAPER[@]}" --set capture_step=graph \
  --runs-dir "$OUT/runs-graph"
cat "$OUT"/runs-graph/*/metrics.jsonl >"$OUT/paper-graph-epoch.jsonl" 2>/dev/null

# Whole epochs of fit vs the authors-style pipeline (PIL per image, 4 DataLoader workers) on a subset.
PER_CLASS=50
[ "$DATA" = synthetic ] && PER_CLASS=500
[ -n "${PAPER_PER_CLASS:-}" ] && PER_CLASS=$PAPER_PER_CLASS
step epoch "${T_EPOCH:-60}" $PY -m micronet_lib bench epoch --device "$DEVICE" --data "$DATA" --train-per-class $PER_CLASS \
  --test-per-class 20 --rounds 1 --capture-step graph --json >"$OUT/epoch.json"

# The GPU study (issue #28's `gpu` notebook profile) only when asked (RUN_STUDY=1; STUDY_ARGS e.g.
# "--data imagefolder:/data/cifar10-jpeg"): docs/study-design.md estimates it at 15-19 GPU-hours at the eager
# step's rate, far beyond one lease, so a lease's run only starts it; its results set goes under OUT/study.
if [ "${RUN_STUDY:-0}" = 1 ] && [ -f "$REPO/notebooks/params/gpu.yaml" ]; then
  # shellcheck disable=SC2086
  step study "${T_STUDY:-90}" $PY -m micronet_lib reproduce --profile gpu --results "$OUT/study" ${STUDY_ARGS:-}
else
  echo "study rc=skipped (RUN_STUDY=${RUN_STUDY:-0}; notebooks/params/gpu.yaml $([ -f "$REPO/notebooks/params/gpu.yaml" ] && echo present || echo absent))" >>"$OUT/steps.txt"
fi

$PY - "$OUT" <<'EOF' | tee "$OUT/summary.txt"
import json, sys
from pathlib import Path

out = Path(sys.argv[1])


def load(name):
    try:
        return json.loads((out / name).read_text())
    except (OSError, ValueError):
        return None


for name in ("train", "eval", "epoch"):
    r = load(f"{name}.json")
    if r is None:
        print(f"{name}: no result (see {name}.log)")
        continue
    m = r["machine"]
    print(f"{name}: {m.get('gpu') or m.get('cpu')} torch {m['torch']}, chosen {r['chosen']} ({r['chosen_source']})"
          + (f", step capture {r['capture_step']}" if "capture_step" in r else ""))
    for mode, ips in r["images_per_s"].items():
        print(f"  {mode:28s} {ips:10.1f} img/s  {r['ratio_vs_authors'][mode]:6.2f}x authors-style")
    if "calibration_s" in r:
        print("  calibration (s/step, min of 3):", r["calibration_s"])
for name, what in (("paper-epoch.jsonl", "paper epoch, eager step"), ("paper-graph-epoch.jsonl", "paper epoch, CUDA-graph step")):
    try:
        lines = [json.loads(l) for l in (out / name).read_text().splitlines() if l.strip()]
    except OSError:
        lines = []
    if not lines:
        print(f"{what}: no metrics (see its log)")
    for rec in lines:
        print(f"{what}: {rec.get('images_per_s', 0):.0f} img/s training, {rec.get('seconds', 0):.1f} s with the test pass,"
              f" test top-1 {rec.get('test_top1')}")
ex = load("execution.json")
if ex:
    print("paper epoch modes: train", ex["train"]["name"], ex["train"].get("seconds"), "| eval", ex["eval"]["name"])
print("steps:", "; ".join(l.strip() for l in (out / "steps.txt").read_text().splitlines()))
EOF
echo "figures written to $OUT/"
