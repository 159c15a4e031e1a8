"""How the text side's yes/no scores become answers: the decision rule tried on development data only,
first-person chats (the demo set) beside LoCoMo development samples 0-3 (third person).

    .venv/bin/python benchmarks/text_calibration.py [--samples 0,1,2,3]
    .venv/bin/python benchmarks/text_calibration.py --scores FILE   # the table again from stored scores

Every probe is scored three ways by the base model (log P(yes) - log P(no)): with the 5 passages
BM25 finds for it (the text side as shipped), with no passages, and with the passages found for the
content-free question ("Did we discuss that?"). So are the held-out pairs the extractive teacher
writes from the same conversations (what the heldout and balanced rules fit on; no model needed).
Three scores, `with`, `with - without` and `with - with_cf` (the second and third remove what the
question alone, or any passages, make the model say), each under four rules: prior (minus the
content-free question's own score), raw (0), balanced (the held-out pairs' median), heldout (the
threshold best on the held-out pairs). About 45 minutes on a 2-core CPU, mostly the held-out pairs.
Writes benchmarks/results/text_calibration-<model>-<dtype>.json (scores and table).
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import statistics
import sys
from pathlib import Path

from paramem.augment.pairs import heldout_pairs
from paramem.augment.teachers.extractive import ExtractiveTeacher
from paramem.config import DEFAULT_MODEL
from paramem.data.formats import load_conversations
from paramem.evaluate.locomo import build_locomo
from paramem.evaluate.probes import load_probes
from paramem.evaluate.run import run_meta, write_results
from paramem.metrics.yes_no import ranking_auc
from paramem.model.loading import dtype_of, load_model
from paramem.model.prompts import SYSTEM_PROMPT
from paramem.model.scoring import CONTENT_FREE_QUESTION, YesNoScorer
from paramem.read.retrieval import TEXT_K, TEXT_RETRIEVER, make_retriever, passages, retrieval_prompt

RESULTS = Path(__file__).parent / "results"
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "locomo" / "locomo8.json"
DEMO = importlib.resources.files("paramem") / "demo_data"


def sets(samples: list[int]):
    """(name, conversations, [(question, "yes"/"no")]): the demo set, then each LoCoMo sample."""
    demo = [(p.question, p.answer) for p in load_probes(str(DEMO / "probes.jsonl"))]
    yield "demo", load_conversations(str(DEMO / "conversations.jsonl")), demo
    for sample in samples:
        bench = build_locomo(DATA, sample, 6)
        yield f"locomo{sample}", bench.conversations, [(p.question, p.answer) for p in bench.probes]


def scored(scorer: YesNoScorer, conversations, probes) -> dict:
    retriever = make_retriever(TEXT_RETRIEVER, passages(conversations))
    held = [(p.question, p.answer) for p in heldout_pairs([ExtractiveTeacher().notes(c) for c in conversations])]
    questions = [q for q, _ in probes] + [q for q, _ in held] + [CONTENT_FREE_QUESTION]
    systems = [retrieval_prompt(found) for found in retriever.search(questions, TEXT_K)]
    return {
        "gold": [a for _, a in probes],
        "held_gold": ["yes" if a.lower().startswith("yes") else "no" for _, a in held],
        "n_probes": len(probes),
        "with": scorer.log_odds(questions, systems),
        "without": scorer.log_odds(questions, [SYSTEM_PROMPT] * len(questions)),
        "with_cf": scorer.log_odds(questions, [systems[-1]] * len(questions)),
    }


def accuracy(gold: list[str], scores: list[float], threshold: float) -> dict:
    right = {"yes": [], "no": []}
    for g, s in zip(gold, scores):
        right[g].append((s > threshold) == (g == "yes"))
    parts = {k: sum(v) / len(v) for k, v in right.items()}
    return {
        "accuracy": round(sum(map(sum, right.values())) / len(gold), 4),
        **{k: round(v, 4) for k, v in parts.items()},
    }


def best_threshold(scores: list[float], gold: list[str]) -> float:
    return max(sorted(set(scores)), key=lambda t: accuracy(gold, scores, t)["accuracy"])


def table(raw: dict) -> dict:
    """Per score and rule, per set: accuracy with yes and no apart; and each score's AUC."""
    out: dict = {}
    for name, v in raw.items():
        n, gold = v["n_probes"], v["gold"]
        scores = {
            "with": v["with"],
            "with - without": [a - b for a, b in zip(v["with"], v["without"])],
            "with - with_cf": [a - b for a, b in zip(v["with"], v["with_cf"])],
        }
        for score, values in scores.items():
            probes, held, content_free = values[:n], values[n:-1], values[-1]
            rules = {
                "prior": content_free,
                "raw": 0.0,
                "balanced": statistics.median(held),
                "heldout": best_threshold(held, v["held_gold"]),
            }
            for rule, threshold in rules.items():
                out.setdefault(f"{score} / {rule}", {})[name] = accuracy(gold, probes, threshold)
            out.setdefault(f"{score} / AUC", {})[name] = {"auc": round(ranking_auc(gold, probes), 4)}
    return out


def printed(rows: dict, names: list[str]) -> str:
    lines = ["| score / rule | " + " | ".join(names) + " | LoCoMo pooled |", "|---" * (len(names) + 2) + "|"]
    for variant, by_set in rows.items():
        cells, locomo = [], []
        for name in names:
            r = by_set[name]
            if "auc" in r:
                cells.append(f"{r['auc']:.3f}")
                value = r["auc"]
            else:
                cells.append(f"{r['accuracy']:.3f} ({r['yes']:.2f} / {r['no']:.2f})")
                value = r["accuracy"]
            if name.startswith("locomo"):
                locomo.append(value)
        lines.append(f"| {variant} | " + " | ".join(cells) + f" | {sum(locomo) / len(locomo):.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", default="0,1,2,3", help="LoCoMo development samples")
    parser.add_argument("--scores", type=Path, help="a results file of this script: print its table again")
    parser.add_argument("--dtype", default=None)
    args = parser.parse_args()
    if args.scores:
        result = json.loads(args.scores.read_text(encoding="utf-8"))
        print(printed(table(result["scores"]), list(result["scores"])))
        return
    base, tokenizer = load_model(DEFAULT_MODEL, args.dtype)
    scorer = YesNoScorer(base.eval(), tokenizer)
    raw = {}
    for name, conversations, probes in sets([int(s) for s in args.samples.split(",")]):
        raw[name] = scored(scorer, conversations, probes)
        print(f"{name}: {len(probes)} probes, {len(raw[name]['held_gold'])} held-out pairs", flush=True)
    rows = table(raw)
    print(printed(rows, list(raw)))
    dtype = dtype_of(base)
    result = {**run_meta(sys.argv, DEFAULT_MODEL, {"locomo": str(DATA), "demo": str(DEMO)}, dtype)}
    result.update({"table": rows, "scores": raw})
    write_results(RESULTS / f"text_calibration-{DEFAULT_MODEL}-{dtype}.json", result)


if __name__ == "__main__":
    main()
