"""The ablation table: one row per run folder of benchmarks/locomo_ablations.sh, memory beside none.

    .venv/bin/python benchmarks/ablation_table.py benchmarks/results/ablations

Prints a Markdown table and writes it to <folder>/ablations.md and <folder>/ablations.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from paramem.evaluate.report import learning_settings
from paramem.evaluate.run import MethodResult


def row(results: dict) -> dict:
    config = learning_settings(results["config"])
    out = {
        "lambda": config["qa_weight"],
        "epochs": config["epochs"],
        "negative_ratio": config["negative_ratio"],
        "open_pairs": config["open_pairs"],
        "statements": config["statements"],
        "base_model": results["base_model"],
        "commit": (results.get("git_commit") or "")[:7],
    }
    for method in ("none", "memory"):
        m = results["methods"][method]["metrics"]["prior"]
        out[method] = {k: m[k] for k in ("accuracy", "yes_accuracy", "no_accuracy", "macro_f1")} | {
            "interval": m["intervals"]["accuracy"],
            "auc": MethodResult.from_dict(results["methods"][method]).auc[0],
        }
    curve = results.get("curve") or []
    out["forgetting"] = None
    if curve:
        first = next(iter(curve[0]))
        out["forgetting"] = round(curve[0][first] - curve[-1][first], 3)  # first session: right after - at end
    return out


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/ablations")
    rows = {}
    for results_file in sorted(folder.glob("*/results.json")):
        results = json.loads(results_file.read_text(encoding="utf-8"))
        if "methods" in results:
            rows[results_file.parent.name] = row(results)
    lines = [
        "| run | lambda | epochs | neg/pos | open pairs | statements | none acc (yes / no) "
        "| memory acc [95% CI] (yes / no) | memory macro-F1 | AUC none / memory | forgetting of session 1 | commit |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        n, m = r["none"], r["memory"]
        low, high = m["interval"]
        lines.append(
            f"| {name} | {r['lambda']:g} | {r['epochs']} | {r['negative_ratio']:g} | {r['open_pairs']} | "
            f"{r['statements']} | "
            f"{n['accuracy']:.3f} ({n['yes_accuracy']:.2f} / {n['no_accuracy']:.2f}) | "
            f"{m['accuracy']:.3f} [{low:.2f}, {high:.2f}] ({m['yes_accuracy']:.2f} / {m['no_accuracy']:.2f}) | "
            f"{m['macro_f1']:.3f} | {n['auc']:.2f} / {m['auc']:.2f} | "
            f"{r['forgetting'] if r['forgetting'] is not None else '-'} | {r['commit']} |"
        )
    table = "\n".join(lines)
    print(table)
    (folder / "ablations.md").write_text(table + "\n", encoding="utf-8")
    (folder / "ablations.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
