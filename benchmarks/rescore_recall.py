"""Score saved recollections again with the current matcher, without learning or recalling again.

    .venv/bin/python benchmarks/rescore_recall.py benchmarks/results/demo.json [more results files]

For each recall-readout method in a demo results file: ranking AUC and the balanced rule (the median
over the demo notes' held-out pairs), from the `recollections` the run saved. Used when the matcher
changes after a run (README: the sentence split at recall branches).
"""

from __future__ import annotations

import json
import sys

from paramem.augment.pairs import validation_pairs
from paramem.cli.demo import demo_files
from paramem.data.notes import Notes
from paramem.metrics.yes_no import ranking_auc, yes_no_metrics
from paramem.read.readers import rule_thresholds
from paramem.read.recall import SentenceMatcher


def main() -> None:
    notes_file = demo_files()[2]
    notes = [Notes.from_dict(n) for n in json.loads(notes_file.read_text(encoding="utf-8"))["notes"]]
    heldout = [p for n in notes for p in validation_pairs(n)]
    for path in sys.argv[1:]:
        for method in json.loads(open(path, encoding="utf-8").read())["methods"]:
            if method.get("readout") != "recall" or method.get("recollections") is None:
                continue
            matcher = SentenceMatcher(method["recollections"])
            gold = [p["answer"] for p in method["predictions"]]
            scores = matcher.scores([p["question"] for p in method["predictions"]])
            threshold = rule_thresholds(matcher.scores, heldout)["balanced"]
            m = yes_no_metrics(gold, ["yes" if s > threshold else "no" for s in scores])
            print(
                f"{path}: {method['method']}: AUC {ranking_auc(gold, scores):.3f}, balanced rule "
                f"{m.accuracy:.3f} ({m.yes_accuracy:.2f} / {m.no_accuracy:.2f})"
            )


if __name__ == "__main__":
    main()
