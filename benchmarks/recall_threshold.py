"""Where recall.RECALL_THRESHOLD comes from: LoCoMo, not the demo set.

    .venv/bin/python benchmarks/recall_threshold.py --data ../shared/data

Every LoCoMo sample's yes/no probes (its first 6 sessions, 8 probes per session, the `paramem locomo`
probes) are matched against that sample's own conversation turns, as a perfect recall would give them:
each probe scores its best cosine similarity to a turn (all-MiniLM-L6-v2). The threshold with the best
balanced accuracy over all samples is the one the recall readout uses. Printed with its ranking AUC;
written to benchmarks/results/recall_threshold.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from paramem.answer import fit_threshold
from paramem.evaluate.locomo import build_locomo
from paramem.evaluate.metrics import ranking_auc, yes_no_metrics
from paramem.evaluate.run import run_meta
from paramem.recall import RECALL_THRESHOLD, SentenceMatcher

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data", help="the folder holding locomo/locomo8.json")
    parser.add_argument("--sessions", type=int, default=6)
    args = parser.parse_args()

    path = Path(args.data) / "locomo" / "locomo8.json"
    gold, similarity = [], []
    for sample in range(len(json.loads(path.read_text(encoding="utf-8")))):
        bench = build_locomo(path, sample, args.sessions)
        matcher = SentenceMatcher([m.content for c in bench.conversations for m in c.messages], threshold=0.0)
        similarity += matcher.scores([p.question for p in bench.probes])
        gold += [p.answer for p in bench.probes]
    fitted = fit_threshold(similarity, gold)
    rows = {}
    for name, threshold in (("fitted", fitted), ("in use", RECALL_THRESHOLD)):
        metrics = yes_no_metrics(gold, ["yes" if s > threshold else "no" for s in similarity])
        rows[name] = {"threshold": round(threshold, 4), **metrics.to_dict()}
        print(
            f"{name:7s} threshold {threshold:.3f}: accuracy {metrics.accuracy:.3f} "
            f"(yes {metrics.yes_accuracy:.2f} / no {metrics.no_accuracy:.2f}), n={metrics.n}"
        )
    auc = ranking_auc(gold, similarity)
    print(f"ranking AUC of the similarity: {auc:.3f}")
    out = RESULTS / "recall_threshold.json"
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = run_meta(sys.argv, "all-MiniLM-L6-v2", {"locomo": str(path), "sessions": args.sessions})
    out.write_text(json.dumps({**meta, "auc": round(auc, 4), "thresholds": rows}, indent=1), encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
