#!/usr/bin/env bash
# GPU check for issue #13: the benchmarks and one paper-profile epoch on CUDA, figures written to a folder.
#
#   scripts/gpu-check.sh [OUT_DIR]        (default: gpu-check-<date>/ in the current folder)
#
# Writes OUT_DIR/{info.txt, tests.txt, profile.txt, train.json, eval.json, epoch.json, paper-epoch.jsonl, execution.json, *.log}
# and prints a summary last (OUT_DIR/summary.txt). Put the figures in docs/performance.md with
# the GPU's name.
#
# Needs: a CUDA GPU, this repository importable (python -m micronet_lib), the released checkpoints
# (MICRONET_ASSETS or the cache). Data for the epochs: MICRONET_CIFAR100_SPEC (default "cifar100";
# e.g. "imagefolder:/data/cifar100"); "synthetic" where no copy can be had (no network): then the
# paper epoch runs on 50,000 generated 32x32 images of 10 classes, CIFAR's size, so the timing of an
# epoch holds while its accuracy means nothing.
#
# Sized for a 15-minute GPU lease: each step has its own timeout (seconds, env T_TESTS, T_TRAIN,
# T_EVAL, T_PROFILE, T_PAPER, T_EPOCH; about 9 minutes in all), and a step that fails or times out is reported
# and the next one runs; the paper epoch logs its progress bar every 5 s, so a cut-off epoch still
# shows its rate in paper.log. A dry run of the script on a CPU, every step small:
#   DEVICE=cpu MICRONET_CIFAR100_SPEC=synthetic PAPER_PER_CLASS=20 BENCH_STEPS=1 BENCH_ROUNDS=1 scripts/gpu-check.sh
set -uo pipefail
OUT=${1:-gpu-check-$(date -u +%Y%m%dT%H%MZ)}
PY=${PYTHON:-python}
DATA=${MICRONET_CIFAR100_SPEC:-cifar100}
DEVICE=${DEVICE:-cuda}
BENCH=(--steps "${BENCH_STEPS:-10}" --rounds "${BENCH_ROUNDS:-3}" --warmup 2 --json)
REPO=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$OUT"
export MICRONET_CACHE=${MICRONET_CACHE:-$OUT/cache} PYTHONUNBUFFERED=1

step() {  # step NAME TIMEOUT COMMAND...: the command's stderr to OUT/NAME.log, its stdout where the caller says
  local name=$1 limit=$2 start=$SECONDS; shift 2
  echo "## $name (limit ${limit}s): $*" >&2
  timeout "$limit" "$@" 2>"$OUT/$name.log"
  local rc=$?
  echo "## $name: rc $rc after $((SECONDS - start)) s" >&2
  [ $rc -eq 0 ] || tail -n 15 "$OUT/$name.log" >&2
}

{
  echo "# micronet gpu-check $(date -u +%FT%TZ), data $DATA"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader || true
  $PY -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available() and torch.cuda.get_device_name(0), 'bf16', torch.cuda.is_available() and torch.cuda.is_bf16_supported())"
  nproc
} 2>&1 | tee "$OUT/info.txt"

# The CUDA tests first (augmentation on the device, a paper-recipe fit): a broken path shows here.
step tests "${T_TESTS:-90}" $PY -m pytest -q -p no:cacheprovider "$REPO/tests/test_cuda.py" >"$OUT/tests.txt"
tail -n 3 "$OUT/tests.txt"
step train "${T_TRAIN:-120}" $PY -m micronet_lib bench train --device "$DEVICE" "${BENCH[@]}" >"$OUT/train.json"
step eval "${T_EVAL:-40}" $PY -m micronet_lib bench eval --device "$DEVICE" "${BENCH[@]}" >"$OUT/eval.json"
[ "$DEVICE" = cuda ] && step profile "${T_PROFILE:-40}" $PY "$REPO/scripts/gpu_profile.py" >"$OUT/profile.txt" \
  && head -n 1 "$OUT/profile.txt" && grep -m 1 "^bf16" "$OUT/profile.txt" && tail -n 1 "$OUT/profile.txt"

# One epoch of the paper recipe (FastAA 4x = 200k samples, CutMix, weighted LS, ortho), mode auto.
SIZE=()
[ "$DATA" = synthetic ] && SIZE=(--set train_per_class=5000 --set test_per_class=1000)
[ -n "${PAPER_PER_CLASS:-}" ] && SIZE=(--set train_per_class="$PAPER_PER_CLASS" --set test_per_class="$PAPER_PER_CLASS")
RUNS=$OUT/runs
TQDM_MININTERVAL=5 step paper "${T_PAPER:-190}" $PY -m micronet_lib train --profile paper --device "$DEVICE" --runs-dir "$RUNS" \
  --set dataset="$DATA" --set epochs_per_cycle=1 --set cycles=1 --set precision=auto --set memory_format=auto "${SIZE[@]}"
cat "$RUNS"/*/metrics.jsonl >"$OUT/paper-epoch.jsonl" 2>/dev/null
cp "$RUNS"/*/execution.json "$OUT/execution.json" 2>/dev/null

# Whole epochs of fit vs the authors-style pipeline (PIL per image, 4 DataLoader workers) on a subset.
PER_CLASS=50
[ "$DATA" = synthetic ] && PER_CLASS=500
[ -n "${PAPER_PER_CLASS:-}" ] && PER_CLASS=$PAPER_PER_CLASS
step epoch "${T_EPOCH:-45}" $PY -m micronet_lib bench epoch --device "$DEVICE" --data "$DATA" --train-per-class $PER_CLASS \
  --test-per-class 20 --rounds 1 --json >"$OUT/epoch.json"

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
    print(f"{name}: {m.get('gpu')} torch {m['torch']}, chosen {r['chosen']} ({r['chosen_source']})")
    for mode, ips in r["images_per_s"].items():
        print(f"  {mode:28s} {ips:10.1f} img/s  {r['ratio_vs_authors'][mode]:6.2f}x authors-style")
    if "calibration_s" in r:
        print("  calibration (s/step, min of 3):", r["calibration_s"])
try:
    lines = [json.loads(l) for l in (out / "paper-epoch.jsonl").read_text().splitlines() if l.strip()]
    for rec in lines:
        print(f"paper epoch: {rec.get('images_per_s', 0):.0f} img/s training, {rec.get('seconds', 0):.1f} s with the test pass,"
              f" test top-1 {rec.get('test_top1')}")
except OSError:
    print("paper epoch: no metrics (see paper.log)")
ex = load("execution.json")
if ex:
    print("paper epoch modes: train", ex["train"]["name"], ex["train"].get("seconds"), "| eval", ex["eval"]["name"])
EOF
echo "figures written to $OUT/"
