#!/usr/bin/env bash
# GPU check for issue #13: the benchmarks and one paper-profile epoch on CUDA, figures written to a file.
#
#   scripts/gpu-check.sh [OUT_FILE]          (default: gpu-check-<date>.txt in the current folder)
#
# Needs: a CUDA GPU, this repository's environment (python -m micronet_lib importable), the released
# checkpoints (MICRONET_ASSETS or the cache) and CIFAR-100 for the paper epoch (MICRONET_CIFAR100_SPEC,
# default "cifar100"; set e.g. "imagefolder:/data/cifar100" for an image-folder copy). Each step is
# bounded by a timeout so that a slow step cannot eat the whole GPU lease. Put the figures in the README
# with the GPU's name (section "Benchmarks").
set -euo pipefail
OUT=${1:-gpu-check-$(date -u +%Y%m%dT%H%MZ).txt}
PY=${PYTHON:-python}
DATA=${MICRONET_CIFAR100_SPEC:-cifar100}
STEP_LIMIT=${STEP_LIMIT:-300}

{
  echo "# micronet gpu-check $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0), 'bf16', torch.cuda.is_bf16_supported())"
  echo "## bench train (cuda; reference = this project's fp32 step)"
  timeout "$STEP_LIMIT" $PY -m micronet_lib bench train --device cuda --compile --steps 10 --rounds 3 --json || echo "bench train failed ($?)"
  echo "## bench eval (cuda)"
  timeout "$STEP_LIMIT" $PY -m micronet_lib bench eval --device cuda --compile --steps 10 --rounds 3 --json || echo "bench eval failed ($?)"
  echo "## bench epoch (cuda, small subset, paper recipe, mode auto)"
  timeout "$STEP_LIMIT" $PY -m micronet_lib bench epoch --device cuda --data "$DATA" --train-per-class 50 --rounds 1 --json \
    || echo "bench epoch failed ($?)"
  echo "## one paper-profile epoch on CUDA (200k samples: FastAA 4x of 50k, CutMix, ortho; mode auto)"
  RUNS=$(mktemp -d)
  start=$(date +%s)
  timeout "$((STEP_LIMIT * 2))" $PY -m micronet_lib train --profile paper --device cuda --runs-dir "$RUNS" --no-progress \
    --set dataset="$DATA" --set epochs_per_cycle=1 --set cycles=1 --set precision=auto --set memory_format=auto \
    || echo "paper epoch failed ($?)"
  echo "paper epoch wall seconds: $(( $(date +%s) - start ))"
  cat "$RUNS"/*/metrics.jsonl 2>/dev/null || true
  cat "$RUNS"/*/execution.json 2>/dev/null || true
} 2>&1 | tee "$OUT"
echo "figures written to $OUT"
