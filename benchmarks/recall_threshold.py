"""Where recall.RECALL_THRESHOLD comes from: LoCoMo, not the demo set.

    .venv/bin/python benchmarks/recall_threshold.py --data ../shared/data

Each LoCoMo sample's yes/no probes (its first 6 sessions, 8 probes per session, the `paramem locomo`
probes) are matched against that sample's own conversation turns, as a perfect recall would give them:
each probe scores its best cosine similarity to a turn (all-MiniLM-L6-v2). The threshold with the best
balanced accuracy over the development samples (0-3) is the one the recall readout uses; it is then
read, unchanged, on the report samples (4-7), which played no part in choosing it. Printed with the
ranking AUC of each split; written to benchmarks/results/recall_threshold.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from paramem.evaluate.locomo import DEV_SAMPLES, REPORT_SAMPLES, build_locomo
from paramem.evaluate.run import run_meta
from paramem.metrics.yes_no import fit_threshold, ranking_auc, yes_no_metrics
from paramem.read.recall import RECALL_THRESHOLD, SentenceMatcher

RESULTS = Path(__file__).parent / "results"


def similarities(path: Path, samples: tuple[int, ...], sessions: int) -> tuple[list[float], list[str]]:
    """Each probe's best similarity to a turn of its own sample, with its gold answer."""
    similarity, gold = [], []
    for sample in samples:
        bench = build_locomo(path, sample, sessions)
        matcher = SentenceMatcher([m.content for c in bench.conversations for m in c.messages], threshold=0.0)
        similarity += matcher.scores([p.question for p in bench.probes])
        gold += [p.answer for p in bench.probes]
    return similarity, gold


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data", help="the folder holding locomo/locomo8.json")
    parser.add_argument("--sessions", type=int, default=6)
    args = parser.parse_args()

    path = Path(args.data) / "locomo" / "locomo8.json"
    split = {
        "dev": similarities(path, DEV_SAMPLES, args.sessions),
        "report": similarities(path, REPORT_SAMPLES, args.sessions),
    }
    fitted = fit_threshold(*split["dev"])
    rows = {}
    for name, threshold in (("fitted on dev", fitted), ("in use", RECALL_THRESHOLD)):
        for part, (similarity, gold) in split.items():
            metrics = yes_no_metrics(gold, ["yes" if s > threshold else "no" for s in similarity])
            rows[f"{name}, {part}"] = {"threshold": round(threshold, 4), **metrics.to_dict()}
            print(
                f"{name:13s} threshold {threshold:.3f} on {part:6s}: accuracy {metrics.accuracy:.3f} "
                f"(yes {metrics.yes_accuracy:.2f} / no {metrics.no_accuracy:.2f}), n={metrics.n}"
            )
    auc = {part: round(ranking_auc(gold, similarity), 4) for part, (similarity, gold) in split.items()}
    print(f"ranking AUC of the similarity: dev {auc['dev']:.3f}, report {auc['report']:.3f}")
    out = RESULTS / "recall_threshold.json"
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = run_meta(sys.argv, "all-MiniLM-L6-v2", {"locomo": str(path), "sessions": args.sessions})
    out.write_text(json.dumps({**meta, "auc": auc, "thresholds": rows}, indent=1), encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
