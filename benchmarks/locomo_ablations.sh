#!/usr/bin/env bash
# PLUM's ablations on LoCoMo, one run per setting, each into its own folder (a sweep is a loop):
# lambda, epochs per session, positive/negative balance, closed questions only, no statements.
# Memory vs none only.
#   bash benchmarks/locomo_ablations.sh [--base-model smollm2-135m] [--sessions 3]
set -euo pipefail
cd "$(dirname "$0")/.."
run() {
  local name=$1; shift
  .venv/bin/paramem locomo --data "${PARAMEM_DATA:-../shared/data}" --methods none,memory --open-questions 0 \
    --no-retention --out "benchmarks/results/ablations/$name" "$@" "${EXTRA[@]}"
}
EXTRA=("$@")
for lam in 1 5 10 20; do run "lambda-$lam" --lambda "$lam"; done
for epochs in 1 3 5 10 15; do run "epochs-$epochs" --epochs "$epochs"; done
for ratio in 0.75 1.25; do run "negatives-$ratio" --negative-ratio "$ratio"; done
run closed-only --closed-only
run no-statements --no-statements
.venv/bin/python benchmarks/ablation_table.py benchmarks/results/ablations
