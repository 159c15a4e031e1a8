"""The query-budget curve of the distilled memory, from the run folders of benchmarks/query_budget.sh.

    .venv/bin/python benchmarks/query_budget.py benchmarks/results/query-budget/s0

One row per budget (queries the teacher answers per session): the memory's accuracy under the prior
rule (yes and no apart) and ranking AUC with 95% intervals, none's beside it, and where a session's
learning time went (teacher prefill, self-study writing, answering; student epochs). Printed as
markdown and written to <folder>/query_budget.{json,md,png}.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from paramem.evaluate.run import MethodResult

STAGES = {  # where a session's learning time goes, as the results record it
    "teacher_prefill_seconds": "teacher prefill",
    "teacher_writing_seconds": "self-study writing",
    "teacher_answering_seconds": "teacher answering",
    "seconds": "student epochs",
}


def row(results: dict) -> dict:
    train = results["config"]["remember"]["train"]
    learned = results["learned"]
    for r in learned:  # answering is what the teacher spent beyond reading and writing
        r["teacher_answering_seconds"] = (
            r["teacher_seconds"] - r["teacher_prefill_seconds"] - r["teacher_writing_seconds"]
        )
    out = {
        "budget": train["distill_queries"],
        "self_study": train["self_study_queries"],
        "queries": statistics.mean(r["teacher_queries"] for r in learned),  # asked: self-study may write fewer
        "sample": results["benchmark"]["sample_id"],
        "split": results["benchmark"]["split"],
        "commit": (results.get("git_commit") or "")[:7],
        "stages": {stage: statistics.mean(r[stage] for r in learned) for stage in STAGES},
    }
    for method in ("none", "memory"):
        saved = MethodResult.from_dict(results["methods"][method])
        m = saved.metrics["prior"]
        auc, interval = saved.auc
        out[method] = {
            "accuracy": m.accuracy,
            "yes_accuracy": m.yes_accuracy,
            "no_accuracy": m.no_accuracy,
            "interval": m.intervals["accuracy"],
            "auc": auc,
            "auc_interval": list(interval),
        }
    return out


def markdown(rows: list[dict]) -> str:
    lines = [
        f"LoCoMo {rows[0]['sample']} ({rows[0]['split']} split), memory distill x sequential, prior rule; "
        "seconds are per session.",
        "",
        "| queries / session | memory acc [95%] (yes / no) | memory AUC [95%] | none acc / AUC | teacher prefill s "
        "| self-study writing s | answering s | student s | commit |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        m, n, s = r["memory"], r["none"], r["stages"]
        lines.append(
            f"| {r['queries']:.1f} (budget {r['budget']}) | {m['accuracy']:.3f} [{m['interval'][0]:.2f}, "
            f"{m['interval'][1]:.2f}] ({m['yes_accuracy']:.2f} / {m['no_accuracy']:.2f}) | {m['auc']:.3f} "
            f"[{m['auc_interval'][0]:.2f}, {m['auc_interval'][1]:.2f}] | {n['accuracy']:.3f} / {n['auc']:.3f} | "
            f"{s['teacher_prefill_seconds']:.1f} | {s['teacher_writing_seconds']:.1f} | "
            f"{s['teacher_answering_seconds']:.1f} | {s['seconds']:.1f} | {r['commit']} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    queries = [r["queries"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label, color in (("accuracy", "accuracy", "tab:blue"), ("auc", "AUC", "tab:orange")):
        left.plot(queries, [r["memory"][key] for r in rows], marker="o", color=color, label=f"memory {label}")
        left.axhline(rows[0]["none"][key], linestyle="--", color=color, linewidth=0.8, label=f"none {label}")
    left.set(xscale="log", xlabel="teacher queries per session", ylabel="on the probes", ylim=(0, 1))
    left.legend()
    bottom = [0.0] * len(rows)
    for stage, label in STAGES.items():
        heights = [r["stages"][stage] for r in rows]
        right.bar([str(round(q)) for q in queries], heights, bottom=bottom, label=label)
        bottom = [b + h for b, h in zip(bottom, heights)]
    right.set(xlabel="teacher queries per session", ylabel="seconds per session")
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/query-budget/s0")
    rows = []
    for results_file in folder.glob("*/results.json"):
        results = json.loads(results_file.read_text(encoding="utf-8"))
        if "methods" in results and "learned" in results:
            rows.append(row(results))
    if not rows:
        sys.exit(f"no finished runs under {folder}")
    rows.sort(key=lambda r: r["budget"])
    table = markdown(rows)
    print(table)
    (folder / "query_budget.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
    (folder / "query_budget.md").write_text(table + "\n", encoding="utf-8")
    plot(rows, folder / "query_budget.png")


if __name__ == "__main__":
    main()
