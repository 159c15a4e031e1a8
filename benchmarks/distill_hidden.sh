#!/usr/bin/env bash
# Hidden-state matching beside the KL (deep context distillation), on development samples only: the
# distilled memory (sequential, the default distill recipe) learned without and with it, side by side
# on the same sessions and probes, memory scored beside none; then one table pooling the samples.
# The weight is fixed before the run, not tuned on its figures.
#   bash benchmarks/distill_hidden.sh [SAMPLES] [SESSIONS] [WEIGHT]     (defaults: "0 1", 3, 1.0)
set -euo pipefail
cd "$(dirname "$0")/.."
SAMPLES=${1:-"0 1"}
SESSIONS=${2:-3}
WEIGHT=${3:-1.0}
OUT=benchmarks/results/distill-hidden
runs=()
for sample in $SAMPLES; do
  for weight in 0 "$WEIGHT"; do
    .venv/bin/paramem locomo --data "${PARAMEM_DATA:-../shared/data}" --sample "$sample" --sessions "$SESSIONS" \
      --objective distill --distill-hidden-weight "$weight" --methods none,memory --open-questions 0 \
      --no-retention --out "$OUT/s$sample-w$weight"
    runs+=("$OUT/s$sample-w$weight")
  done
done
.venv/bin/python benchmarks/locomo_main.py "${runs[@]}" --name "distill-hidden-w$WEIGHT"
