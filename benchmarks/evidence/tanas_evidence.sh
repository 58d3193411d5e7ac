#!/usr/bin/env bash
# Task-aware NAS against FUSE and random search in the general space and hand-designed networks (issue 14,
# section 4): MNIST Task 2 and CIFAR-10 Task 2, with several search seeds and several final-training seeds.
#
# Usage: benchmarks/evidence/tanas_evidence.sh [DATA_DIR] [OUT]      (defaults: ../shared/datasets docs/nas/evidence)
# Resumable: the dictionary and every finished comparison row are files under OUT; rerun to continue.
# Settings (environment variables, defaults in brackets):
#   DATASETS ["mnist cifar10"]   SEARCH_SEEDS ["0 1 2"]   FINAL_SEEDS ["0,1,2"]   DIST_SEEDS [3]
#   MAX_TRAIN [10000]   MAX_TEST [2000]   EPOCHS [3] (final training)   HAND ["vgg16,resnet18"]   HAND_WIDTH [0.25]
#   DIST_EPOCHS [20]   EPSILON [0.02] (the distance's networks: the task-distance defaults, epsilon mode)
#   REPORT [1] (0: skip the dictionary's quality report; a later rerun with REPORT=1 adds it)   REPORT_EPOCHS [EPOCHS]
#   BUDGET ["--iterations 2 --candidates 4 --rounds 3 --w-steps 20 --channels 8 --layers 3"]
#   PYTHON [.venv/bin/python]
# 2026-12-08 (FUSE 'halving', docs/nas/evidence_halving): stopped after 140 min wall with 2 of 3 MNIST and 1 of 3
# CIFAR-10 search seeds, sharing the 2 cores with 3-5 other jobs.
# Measured (2026-12-07, docs/nas/README.md): MNIST took 88 min wall and CIFAR-10 98 min with the defaults
# (REPORT=0), each on one torch thread while 2-4 other jobs shared the 2 cores. The dictionary's quality report
# (REPORT=1) trains 24 more networks for REPORT_EPOCHS: on MNIST 50 min wall, niced behind the other jobs; on
# CIFAR-10 over 40 min of one core. Smoke test (under a minute):
#   DATASETS=digits MAX_TRAIN=300 MAX_TEST=90 EPOCHS=1 SEARCH_SEEDS="0" FINAL_SEEDS=0,1 DIST_SEEDS=2 DIST_EPOCHS=2 \
#   REPORT=0 HAND=small_cnn HAND_WIDTH=1 \
#   BUDGET="--iterations 1 --candidates 2 --rounds 1 --w-steps 3 --channels 4 --layers 3" \
#   benchmarks/evidence/tanas_evidence.sh "" /tmp/tanas-smoke
set -euo pipefail
DATA=${1:-../shared/datasets}
OUT=${2:-docs/nas/evidence}
PY=${PYTHON:-.venv/bin/python}
DATASETS=${DATASETS:-mnist cifar10}
SEARCH_SEEDS=${SEARCH_SEEDS:-0 1 2}
FINAL_SEEDS=${FINAL_SEEDS:-0,1,2}
DIST_SEEDS=${DIST_SEEDS:-3}
MAX_TRAIN=${MAX_TRAIN:-10000}
MAX_TEST=${MAX_TEST:-2000}
EPOCHS=${EPOCHS:-3}
REPORT_EPOCHS=${REPORT_EPOCHS:-$EPOCHS}
REPORT=${REPORT:-1}
DIST_EPOCHS=${DIST_EPOCHS:-20}
EPSILON=${EPSILON:-0.02}
HAND=${HAND:-vgg16,resnet18}
HAND_WIDTH=${HAND_WIDTH:-0.25}
read -r -a BUDGET <<< "${BUDGET:---iterations 2 --candidates 4 --rounds 3 --w-steps 20 --channels 8 --layers 3}"
NO_REPORT=()
[ "$REPORT" = 0 ] && NO_REPORT=(--no-report)
DATA_ARGS=()
[ -n "$DATA" ] && DATA_ARGS=(--data-dir "$DATA")

for ds in $DATASETS; do
  mkdir -p "$OUT/$ds"
  start=$(date +%s)
  # the dictionary (baselines 0, 1, 3), with its quality report; DIST_SEEDS seeds of the task distance
  "$PY" -m ftdfast dictionary build --dataset "$ds" "${DATA_ARGS[@]}" --tasks 0,1,3 --max-train "$MAX_TRAIN" \
      --max-test "$MAX_TEST" --seeds "$DIST_SEEDS" --epochs "$DIST_EPOCHS" --epsilon "$EPSILON" \
      --report-epochs "$REPORT_EPOCHS" "${NO_REPORT[@]}" --out "$OUT/$ds/dictionary.json" \
      --no-progress "${BUDGET[@]}" | tee "$OUT/$ds/dictionary_report.md"
  first=1
  folders=()
  for s in $SEARCH_SEEDS; do
    hand=""
    [ $first -eq 1 ] && hand="$HAND"       # hand-designed rows do not depend on the search seed: train them once
    first=0
    "$PY" -m ftdfast search --dictionary "$OUT/$ds/dictionary.json" --target "$ds:2" "${DATA_ARGS[@]}" \
        --seed "$s" --final-seeds "$FINAL_SEEDS" --epochs "$EPOCHS" --hand-designed "$hand" \
        --hand-width "$HAND_WIDTH" --out "$OUT/$ds/seed$s" --no-progress "${BUDGET[@]}"
    folders+=("$OUT/$ds/seed$s")
  done
  "$PY" - "$ds" "$(( $(date +%s) - start ))" "${folders[@]}" <<'PYEOF' | tee "$OUT/$ds/summary.md"
import sys
from ftdfast.nas.evaluate import summarize_runs
ds, seconds, folders = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
print(summarize_runs(folders, title=f"Task-aware search for {ds}:2 over {len(folders)} search seeds"))
print(f"Wall time of this invocation for this dataset (dictionary, searches, final training; a resumed run "
      f"counts only what it computed): {seconds} s.")
PYEOF
done
