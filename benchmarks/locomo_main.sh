#!/bin/bash
# The main table's runs: every report sample (4-7) with each memory form, then the table.
# About an hour per run with the 0.5B model on a 2-core AVX2 CPU; 20 runs. Resumable: rerun to go on.
# The distilled forms run without yes/no checks (as the first main table was learned, before checks
# became the default) and with them (the "-checks" folders).
# The methods that read no memory are the same for every form of a sample, so only each sample's
# first run scores them (locomo_main.py takes them from there); the others score memory and hybrid.
#   bash benchmarks/locomo_main.sh [OUT] [SAMPLES]     (SAMPLES="0 1 2 3" for the development split)
set -euo pipefail
OUT=${1:-benchmarks/results/locomo-main}
SAMPLES=${2:-"4 5 6 7"}
PARAMEM=${PARAMEM:-.venv/bin/paramem}
runs=()
for sample in $SAMPLES; do
  methods="none,memory,context,bm25,dense,hybrid"
  for form in plum distill cartridge distill-checks cartridge-checks; do
    case $form in
      plum) flags="--objective plum" ;;
      distill) flags="--objective distill --distill-checks 0" ;;
      cartridge) flags="--objective distill --form cartridge --distill-checks 0" ;;
      distill-checks) flags="--objective distill --distill-checks 32" ;;
      cartridge-checks) flags="--objective distill --form cartridge --distill-checks 32" ;;
    esac
    $PARAMEM locomo --out "$OUT/s$sample-$form" --sample "$sample" $flags --methods "$methods" \
      --open-questions 20 --no-retention
    methods="memory,hybrid"
    runs+=("$OUT/s$sample-$form")
  done
done
.venv/bin/python benchmarks/locomo_main.py "${runs[@]}" --name "$(basename "$OUT")"
