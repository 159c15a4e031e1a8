#!/usr/bin/env bash
# The README's LoCoMo table: every method side by side, same base model, same probes, one run.
#   bash benchmarks/locomo.sh                       # embedded default model, 6 sessions (under 60 min)
#   bash benchmarks/locomo.sh --base-model smollm2-135m --out benchmarks/results/locomo-smollm2-135m
#   bash benchmarks/locomo.sh --full                # every session, every open question, full MMLU/ARC
# Interrupted? Run the same command again: it resumes from benchmarks/results/<folder>/results.json.
set -euo pipefail
cd "$(dirname "$0")/.."
# A later --out in "$@" wins over the default folder.
exec .venv/bin/paramem locomo --data "${PARAMEM_DATA:-../shared/data}" --out benchmarks/results/locomo-default "$@"
