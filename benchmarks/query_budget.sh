#!/usr/bin/env bash
# The query budget of the distilled memory: the same development sessions learned with more and more
# teacher queries per session, memory scored beside none, then the curve (accuracy and AUC against
# queries, and the seconds of each stage: teacher prefill, self-study writing, answering, student epochs).
# Development sample by default: the budget is a design choice, so it is tuned there, never on 4-7.
#   bash benchmarks/query_budget.sh [SAMPLE] [SESSIONS] [BUDGETS]     (defaults: 0, 3, "4 8 16 32 64")
set -euo pipefail
cd "$(dirname "$0")/.."
SAMPLE=${1:-0}
SESSIONS=${2:-3}
BUDGETS=${3:-"4 8 16 32 64"}
OUT=benchmarks/results/query-budget/s$SAMPLE
for budget in $BUDGETS; do
  # self-study writes up to 8 of the queries, never all of them (the recall cue keeps its place)
  self_study=$(( budget - 1 < 8 ? budget - 1 : 8 ))
  .venv/bin/paramem locomo --data "${PARAMEM_DATA:-../shared/data}" --sample "$SAMPLE" --sessions "$SESSIONS" \
    --objective distill --distill-queries "$budget" --self-study-queries "$self_study" \
    --methods none,memory --open-questions 0 --no-retention --out "$OUT/q$budget"
done
.venv/bin/python benchmarks/query_budget.py "$OUT"
