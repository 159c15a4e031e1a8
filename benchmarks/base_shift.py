"""Would reading only what the memory adds help? A post-hoc check on saved LoCoMo runs, learning nothing.

    .venv/bin/python benchmarks/base_shift.py benchmarks/results/locomo-dev0-*/results.json \
        benchmarks/results/locomo-main/*/results.json

On the report samples the distilled memory's yes/no log-odds follow the base model's own (no memory)
log-odds on the same probe more than the teacher's, and the base model ranks those probes below
chance. The candidate readout is the shift the memory makes: memory log-odds minus the base model's on
the same question, yes above 0, so nothing is fitted. For each run, its memory's AUC as read today, the
shift's AUC and its accuracy at 0 with yes and no apart, and the Spearman correlation of the memory's
scores with the base model's and with the context method's (the teacher's). A memory run without its
own `none` method is paired with the `none` and `context` of a given run of the same sample that has
them (same base model, same probes), as `locomo_main.py` takes them from each sample's first run.
Writes `benchmarks/results/base_shift.json` (`--out` for another file).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from scipy.stats import spearmanr

from paramem.metrics.yes_no import ranking_auc, yes_no_metrics


def log_odds(run: dict, method: str) -> dict[str, tuple[float, str]] | None:
    """question -> (log-odds, gold answer), or None when the run has no such method read by log-odds."""
    entry = run.get("methods", {}).get(method)  # a run still learning has none yet
    if entry is None or entry.get("readout") != "log-odds":
        return None
    return {p["question"]: (p["score"], p["answer"]) for p in entry["predictions"]}


def check(path: Path, run: dict, plain_runs: dict[str, dict]) -> dict | None:
    memory = log_odds(run, "memory")
    others = run if "none" in run.get("methods", {}) else plain_runs.get(run["benchmark"]["sample_id"])
    if memory is None or others is None:
        return None
    base, context = log_odds(others, "none"), log_odds(others, "context")
    if base is None or set(base) != set(memory):
        return None
    questions = sorted(memory)
    train = run["config"]["remember"]["train"]
    gold = [memory[q][1] for q in questions]
    shift = [memory[q][0] - base[q][0] for q in questions]
    at_zero = yes_no_metrics(gold, ["yes" if s > 0 else "no" for s in shift], intervals=False)

    def rho(other: dict) -> float:
        return round(float(spearmanr([memory[q][0] for q in questions], [other[q][0] for q in questions])[0]), 3)

    return {
        "run": str(path.parent),
        "memory": f"{train.get('objective', 'plum')} × {train.get('form', 'sequential')}",
        "probes": len(questions),
        "memory_auc": round(ranking_auc(gold, [memory[q][0] for q in questions]), 3),
        "shift_auc": round(ranking_auc(gold, shift), 3),
        "shift_accuracy": round(at_zero.accuracy, 3),
        "shift_yes_no": [round(at_zero.yes_accuracy, 2), round(at_zero.no_accuracy, 2)],
        "rho_base": rho(base),
        "rho_context": rho(context) if context is not None and set(context) == set(memory) else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", type=Path, help="results.json files of LoCoMo runs")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/base_shift.json"))
    args = parser.parse_args()
    runs = {path: json.loads(path.read_text(encoding="utf-8")) for path in args.results}
    plain_runs: dict[str, dict] = {}  # per sample, the first given run that answered with no memory
    for run in runs.values():
        if "none" in run.get("methods", {}):
            plain_runs.setdefault(run["benchmark"]["sample_id"], run)
    rows = [row for row in (check(path, run, plain_runs) for path, run in runs.items()) if row is not None]
    print("| run | memory | memory AUC | shift AUC | shift accuracy (yes / no) | rho with base | rho with context |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        yes, no = r["shift_yes_no"]
        context = "-" if r["rho_context"] is None else f"{r['rho_context']:.2f}"
        print(
            f"| {r['run']} | {r['memory']} | {r['memory_auc']:.3f} | {r['shift_auc']:.3f}"
            f" | {r['shift_accuracy']:.3f} ({yes:.2f} / {no:.2f}) | {r['rho_base']:.2f} | {context} |"
        )
    args.out.write_text(json.dumps({"results": [str(p) for p in args.results], "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
