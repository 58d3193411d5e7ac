#!/usr/bin/env bash
# Task-aware NAS on real data (issue 5 evidence): MNIST Task 2 and CIFAR-10 Task 2, CPU-sized budgets.
# Usage: benchmarks/tanas_evidence.sh [DATA_DIR] [OUT]   (default ../shared/datasets docs/nas); resumable.
set -euo pipefail
DATA=${1:-../shared/datasets}
OUT=${2:-docs/nas}
PY=${PYTHON:-.venv/bin/python}
BUDGET=(--iterations 2 --candidates 3 --rounds 2 --w-steps 20 --alpha-steps 5 --channels 8 --layers 3 --epochs 3)
for ds in mnist cifar10; do
  "$PY" -m ftdfast dictionary build --dataset "$ds" --data-dir "$DATA" --tasks 0,1,3 --max-train 10000 \
      --max-test 2000 --out "$OUT/$ds/dictionary.json" --no-progress "${BUDGET[@]}"
  "$PY" -m ftdfast search --dictionary "$OUT/$ds/dictionary.json" --target "$ds:2" --hand-width 0.25 \
      --out "$OUT/$ds" --no-progress "${BUDGET[@]}"
done
