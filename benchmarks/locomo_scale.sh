#!/usr/bin/env bash
# Scale: every session of one report sample (up to 35, about 25k tokens) learned in order. The memory is
# scored on all sessions so far after each one (its forgetting curve: session 1 after all the others),
# context and dense every 5 sessions reading only the sessions so far (where the prompt stops fitting,
# CONTEXT_TOKENS, or gets slow). Many hours on 2 CPU cores; resumable: rerun to go on.
#   bash benchmarks/locomo_scale.sh [SAMPLE] [OBJECTIVE]     (defaults: 4, plum; distill for the other)
set -euo pipefail
cd "$(dirname "$0")/.."
SAMPLE=${1:-4}
OBJECTIVE=${2:-plum}
.venv/bin/paramem locomo --data "${PARAMEM_DATA:-../shared/data}" --sample "$SAMPLE" --sessions 0 \
  --objective "$OBJECTIVE" --methods none,memory,context,dense --curve-methods context,dense --curve-every 5 \
  --open-questions 0 --no-retention --out "benchmarks/results/locomo-scale/s$SAMPLE-$OBJECTIVE"
