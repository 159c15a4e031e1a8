#!/usr/bin/env bash
# Scale: every session of one report sample (up to 35, about 25k tokens) learned in order. The memory is
# scored on all sessions so far after each one (its forgetting curve: session 1 after all the others),
# context and dense every 5 sessions reading only the sessions so far (where the prompt stops fitting,
# CONTEXT_TOKENS, or gets slow). Many hours on 2 CPU cores; resumable: rerun to go on.
#   bash benchmarks/locomo_scale.sh [SAMPLE] [OBJECTIVE] [FORM] [paramem locomo options...]
# Defaults: 4, plum, sequential. The distilled cartridges as in the main table, with the hybrid:
#   bash benchmarks/locomo_scale.sh 4 distill cartridge --distill-checks 0
set -euo pipefail
cd "$(dirname "$0")/.."
SAMPLE=${1:-4}
OBJECTIVE=${2:-plum}
FORM=${3:-sequential}
NAME="s$SAMPLE-$OBJECTIVE"
METHODS=none,memory,context,dense
if [ "$FORM" != sequential ]; then NAME="$NAME-$FORM"; fi
if [ "$OBJECTIVE" != plum ]; then METHODS="$METHODS,hybrid"; fi
.venv/bin/paramem locomo --data "${PARAMEM_DATA:-../shared/data}" --sample "$SAMPLE" --sessions 0 \
  --objective "$OBJECTIVE" --form "$FORM" --methods "$METHODS" --curve-methods context,dense --curve-every 5 \
  --open-questions 0 --no-retention --out "benchmarks/results/locomo-scale/$NAME" "${@:4}"
