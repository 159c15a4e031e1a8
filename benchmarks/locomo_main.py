"""The main table: every method and memory form on LoCoMo's report samples, pooled.

    .venv/bin/python benchmarks/locomo_main.py RUN_FOLDER... [--name NAME]

Each RUN_FOLDER is one `paramem locomo` run (one sample, one memory form; `benchmarks/locomo_main.sh`
makes them). The methods that read no memory (none, context, bm25, dense) are the same in every run
of a sample, so they are taken from the first run of each sample; `memory` and `hybrid` are named by
the run's form (memory-plum, memory-distill, memory-cartridge-checks, ...). Probes are pooled over samples:
accuracy under each method's main rule (the prior for log-odds; the balanced rule for cartridges
read alone, chosen on development samples), yes and no apart, and ranking AUC,
each with a 95% bootstrap interval over the pooled probes; open-question F1 per category; prompt
tokens and seconds per answer; seconds to learn a session; bytes per user. The table says which
split its samples are (dev: tuned on; report: never looked at while tuning). Printed as markdown and
written to benchmarks/results/locomo_main-NAME.json and .md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from paramem.evaluate.locomo import NOT_MENTIONED
from paramem.evaluate.run import run_meta
from paramem.metrics.yes_no import ranking_auc, ranking_auc_interval, yes_no_metrics
from paramem.read.readers import main_rule

RESULTS = Path(__file__).parent / "results"
MEMORY_METHODS = ("memory", "hybrid")


def form_name(results: dict) -> str:
    """plum, distill or cartridge, with "-checks" when distilled with yes/no checks and "-hidden" when
    matching the teacher's hidden states too: how the run's memory was learned."""
    train = results["config"].get("remember", {}).get("train", {})
    name = "cartridge" if train.get("form") == "cartridge" else train.get("objective", "plum")  # older: plum
    if name != "plum" and train.get("distill_checks"):  # results written before checks existed have none
        name += "-checks"
    if train.get("distill_hidden_weight"):  # matched the teacher's hidden states too (absent: not)
        name += "-hidden"
    return name


def pooled_rows(runs: list[dict]) -> dict[str, dict]:
    """Per method name, the runs' method results, one per sample."""
    rows: dict[str, list[tuple[dict, dict]]] = {}
    seen_plain: set[tuple[str, str]] = set()
    for results in runs:
        sample = results["benchmark"]["sample_id"]
        for method, saved in results["methods"].items():
            if method in MEMORY_METHODS:
                name = f"{method}-{form_name(results)}"
            elif (sample, method) in seen_plain:
                continue
            else:
                seen_plain.add((sample, method))
                name = method
            rows.setdefault(name, []).append((results, saved))
    return rows


def summarise(name: str, parts: list[tuple[dict, dict]]) -> dict:
    gold, scores, decided, prompt_tokens, seconds, open_scores = [], [], [], [], [], {}
    not_mentioned_5, not_mentioned_others = [], []  # per open answer: did it say "not mentioned"?
    for results, saved in parts:
        # a memory's main rule: cartridges read alone are read under their own (readers.CARTRIDGE_RULE)
        rule = main_rule(saved.get("readout", "log-odds"), "cartridge" if name.startswith("memory-cartridge") else None)
        threshold = saved["thresholds"][rule]
        for p in saved["predictions"]:
            gold.append(p["answer"])
            scores.append(p["score"] if "score" in p else p["log_odds"])  # older files: log_odds
            decided.append("yes" if scores[-1] > threshold else "no")
        prompt_tokens.append(saved["prompt_tokens"])
        seconds.append(saved["seconds"] / max(len(saved["predictions"]), 1))
        method = name.split("-")[0]
        for row in results.get("open", {}).get(method, {}).get("answers", []):
            open_scores.setdefault(str(row["category"]), []).append(row["score"])
            said = bool(NOT_MENTIONED.search(row["answer"]))
            (not_mentioned_5 if row["category"] == 5 else not_mentioned_others).append(said)
    metrics = yes_no_metrics(gold, decided)
    answerable = [s for c, v in open_scores.items() if c != "5" for s in v]
    # learning a session: the student's epochs and, for distilled memories, the teacher's targets
    learned = [
        r["seconds"] + (r.get("teacher_seconds") or 0) for results, _ in parts for r in results.get("learned", [])
    ]
    memory = name.split("-")[0] in MEMORY_METHODS
    return {
        "method": name,
        "rule": rule,
        "samples": [results["benchmark"]["sample_id"] for results, _ in parts],
        "accuracy": metrics.accuracy,
        "yes_accuracy": metrics.yes_accuracy,
        "no_accuracy": metrics.no_accuracy,
        "accuracy_interval": metrics.intervals.get("accuracy"),
        "auc": ranking_auc(gold, scores),
        "auc_interval": ranking_auc_interval(gold, scores),
        "n": metrics.n,
        "open_f1": statistics.mean(answerable) if answerable else None,
        "open_f1_by_category": {c: statistics.mean(v) for c, v in sorted(open_scores.items())},
        # Says it was not mentioned: on LoCoMo's category 5 (adversarial) it should, on the others not.
        "not_mentioned_category_5": _rate(not_mentioned_5),
        "not_mentioned_others": _rate(not_mentioned_others),
        "prompt_tokens": statistics.mean(prompt_tokens),
        "seconds_per_answer": statistics.mean(seconds),
        "seconds_per_session": statistics.mean(learned) if memory and learned else None,
        "bytes_per_user": statistics.mean(
            results["costs"][name.split("-")[0]]["bytes_per_user"] for results, _ in parts
        ),
    }


def _rate(flags: list[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def markdown(rows: list[dict], splits: set[str]) -> str:
    lines = [
        f"Split: {', '.join(sorted(splits))}. Probes pooled over samples; accuracy under each method's main rule "
        "(the prior rule; cartridges read alone: the balanced rule).",
        "",
        '"Not mentioned": how often an open answer says so, on LoCoMo\'s category-5 questions (adversarial: '
        "what the sessions never said of that speaker; it should) and on the others (it should not).",
        "",
        "| method | accuracy [95%] | yes / no | AUC [95%] | open F1 | says not mentioned: cat. 5 / others "
        "| prompt tokens | s/answer | s/session | bytes/user |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        low, high = r["accuracy_interval"] or (float("nan"), float("nan"))
        auc_low, auc_high = r["auc_interval"]
        f1 = "-" if r["open_f1"] is None else f"{r['open_f1']:.3f}"
        learn = "-" if r["seconds_per_session"] is None else f"{r['seconds_per_session']:.0f}"
        lines.append(
            f"| {r['method']} | {r['accuracy']:.3f} [{low:.2f}, {high:.2f}] | {r['yes_accuracy']:.2f} / "
            f"{r['no_accuracy']:.2f} | {r['auc']:.3f} [{auc_low:.2f}, {auc_high:.2f}] | {f1} | "
            f"{_share(r['not_mentioned_category_5'])} / {_share(r['not_mentioned_others'])} | "
            f"{r['prompt_tokens']:.0f} | {r['seconds_per_answer']:.2f} | {learn} | {r['bytes_per_user'] / 1e6:.2f} MB |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="paramem locomo output folders")
    parser.add_argument("--name", default="report", help="suffix of the files written")
    args = parser.parse_args()
    runs = [json.loads((run / "results.json").read_text(encoding="utf-8")) for run in args.runs]
    missing = [str(run) for run, results in zip(args.runs, runs) if "methods" not in results]
    if missing:
        sys.exit(f"unfinished runs (no methods step yet): {', '.join(missing)}")
    splits = {results["benchmark"].get("split", "unsplit") for results in runs}
    rows = [summarise(name, parts) for name, parts in pooled_rows(runs).items()]
    table = markdown(rows, splits)
    print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = run_meta(sys.argv, runs[0]["base_model"], {"runs": [str(r) for r in args.runs]}, runs[0].get("dtype"))
    payload = {**meta, "splits": sorted(splits), "rows": rows}
    (RESULTS / f"locomo_main-{args.name}.json").write_text(json.dumps(payload, indent=1), encoding="utf-8")
    (RESULTS / f"locomo_main-{args.name}.md").write_text(table + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
