"""The recall readout on LoCoMo: a finished `paramem locomo` run's memory, read by recall.

    .venv/bin/python benchmarks/locomo_recall.py RUN_FOLDER [--data DATASETS_ROOT]

RUN_FOLDER is a `paramem locomo` run whose store (RUN_FOLDER/home) is still there. Nothing is learned
again: the stored memory recalls each learned session from its date alone, and every probe of the run
scores its best similarity to a recalled sentence (`readers.RecallReader`). Beside it, the same probes
under the same readout for no memory (the base model recalls) and for the context (the probes matched
against the sessions' raw turns: what perfect recall would give). Each method under every rule: raw
(recall.RECALL_THRESHOLD, fitted on development samples 0-3), balanced (the readout's main rule: the
median score of the teacher's held-out pairs), heldout and prior, with yes and no apart; ranking AUC with
its 95% interval; beside each, the run's own log-odds figures for the same method. Printed as markdown
and written to RUN_FOLDER/recall.json.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from paramem.augment.pairs import heldout_pairs
from paramem.evaluate.experiment_config import USER
from paramem.evaluate.locomo import build_locomo
from paramem.evaluate.run import RECALL_METHODS, evaluate_yes_no, run_meta, write_json
from paramem.model.loading import dtype_of
from paramem.read.loading import load_memory
from paramem.read.readers import main_rule
from paramem.read.recall import recall_cues

RULES = ("raw", "balanced", "heldout", "prior")


def _locomo_file(saved: str, data: str | None) -> Path:
    """The run's LoCoMo file, or the same file name under another datasets root."""
    return Path(saved) if data is None else Path(data) / "locomo" / Path(saved).name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a `paramem locomo` results folder with its home")
    parser.add_argument("--data", default=os.environ.get("PARAMEM_DATA"), help="datasets root (default: the run's)")
    args = parser.parse_args()
    if not (args.run / "results.json").is_file() or not (args.run / "home").is_dir():
        parser.error(f"{args.run}: not a `paramem locomo` run with its store (results.json and home/)")
    saved = json.loads((args.run / "results.json").read_text(encoding="utf-8"))
    config = saved["config"]
    form = config["remember"]["train"]["form"]
    if form == "cartridge":
        parser.error(f"{args.run}: cartridges are read by log-odds; the recall readout reads sequential memories")
    bench = build_locomo(
        _locomo_file(config["locomo"], args.data), config["sample"], config["sessions"], config["probes_per_session"]
    )
    model, tokenizer, memory = load_memory(USER, args.run / "home")
    notes = memory.notes()
    results = evaluate_yes_no(
        model,
        tokenizer,
        bench.probes,
        list(RECALL_METHODS),
        bench.conversations,
        heldout_pairs(notes),
        readout="recall",
        cues=recall_cues(notes),
    )
    print(
        f"{bench.sample_id} ({saved['benchmark']['split']}), {len(bench.conversations)} sessions learned, "
        f"{len(bench.probes)} probes ({sum(p.answer == 'yes' for p in bench.probes)} yes); memory learned "
        f"{config['remember']['train']['objective']} x {form}, read in {dtype_of(model)}\n"
    )
    print("| method | readout (rule) | accuracy [95%] | yes / no | AUC [95%] | s (all probes) |")
    print("|---|---|---|---|---|---|")
    for result in results:
        auc, (low, high) = result.auc
        for rule in RULES:
            m = result.metrics[rule]
            main = " (main)" if rule == main_rule("recall") else ""
            print(
                f"| {result.method} | recall ({rule}{main}) | {m.accuracy:.3f} [{m.intervals['accuracy'][0]:.2f}, "
                f"{m.intervals['accuracy'][1]:.2f}] | {m.yes_accuracy:.2f} / {m.no_accuracy:.2f} | "
                f"{auc:.3f} [{low:.2f}, {high:.2f}] | {result.seconds:.0f} |"
            )
        logged = saved["methods"].get(result.method)
        if logged:
            rule = main_rule("log-odds", form if result.method == "memory" else None)
            m = logged["metrics"][rule]
            low, high = logged["auc_interval"]
            print(
                f"| {result.method} | log-odds ({rule}; the run's) | {m['accuracy']:.3f} | "
                f"{m['yes_accuracy']:.2f} / {m['no_accuracy']:.2f} | {logged['auc']:.3f} [{low:.2f}, {high:.2f}] "
                f"| {logged['seconds']:.0f} |"
            )
    command = ["benchmarks/locomo_recall.py", str(args.run)]
    meta = run_meta(command, saved["base_model"], {"locomo": config["locomo"]}, dtype_of(model))
    write_json(results, args.run / "recall.json", {**meta, "benchmark": saved["benchmark"]})
    print(f"\nwrote {args.run / 'recall.json'}")


if __name__ == "__main__":
    main()
