"""How strongly should greedy replies be kept from repeating themselves? Chosen on development data.

    .venv/bin/python benchmarks/reply_decoding.py [--episodes 10] [--penalties 1.0 1.1 1.2]

On MSC's development episodes (the first 10 of the test file; the report episodes are never read),
the methods that learn nothing (base, TpLP: the history in the prompt, RAG: BM25 turns) reply to
session 4 greedily under each repetition penalty (transformers' `repetition_penalty`: the logits of
tokens already in the prompt or the reply are divided by it). Prints per method and penalty ROUGE-1/L
and Persona-F1 against the gold replies, the share of replies that repeat a 4-word sequence, and the
share that ran to the token limit; writes benchmarks/results/reply_decoding.json with every reply.
`REPLY_REPETITION_PENALTY` (config.py) is the penalty picked from this run.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

from paramem.config import DEFAULT_MODEL
from paramem.evaluate.episodes import select
from paramem.evaluate.personalised import Replier, RepliesConfig, load_episodes
from paramem.evaluate.run import run_meta
from paramem.metrics.replies import mean_scores, score_reply
from paramem.model.loading import dtype_of, load_model

METHODS = ("base", "tplp", "rag")


def repeats(text: str, n: int = 4) -> bool:
    """Whether some sequence of `n` words occurs twice in the reply (case-folded)."""
    words = re.findall(r"\w+", text.casefold())
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return len(grams) != len(set(grams))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=10, help="development episodes (MSC has 10)")
    parser.add_argument("--penalties", type=float, nargs="+", default=[1.0, 1.1, 1.2])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--base-model", default=DEFAULT_MODEL)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/reply_decoding.json"))
    args = parser.parse_args()

    config = RepliesConfig()
    episodes = select(load_episodes(config, args.data), "dev", args.episodes)
    model, tokenizer = load_model(args.base_model)
    limit = config.train.max_new_tokens
    rows, replies = [], {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        for penalty in args.penalties:
            tuned = replace(config, train=replace(config.train, repetition_penalty=penalty))
            replier = Replier(model, tokenizer, tuned, {}, Path(work), args.base_model, dtype_of(model))
            for method in METHODS:
                scores, looped, full, said = [], 0, 0, []
                for episode in episodes:
                    for target, text in zip(episode.targets, replier.replies(method, episode)):
                        gold = episode.test.messages[target].content
                        scores.append(score_reply(text, gold, list(episode.facts)))
                        looped += repeats(text)
                        full += len(tokenizer(text, add_special_tokens=False)["input_ids"]) >= limit
                        said.append({"episode": episode.id, "reply": text, "gold": gold})
                means = mean_scores(scores)
                row = {
                    "penalty": penalty,
                    "method": method,
                    "replies": len(scores),
                    "rouge1": means["rouge1"],
                    "rouge_l": means["rouge_l"],
                    "persona_f1": means["persona_f1"],
                    "rouge_l_sd": statistics.stdev([s.rouge_l for s in scores]) if len(scores) > 1 else 0.0,
                    "repeating": looped / len(scores),
                    "at_limit": full / len(scores),
                }
                rows.append(row)
                replies[f"{method}@{penalty}"] = said
                print(
                    f"penalty {penalty:.2f} {method:5s}  ROUGE-1 {row['rouge1']:.3f}  ROUGE-L {row['rouge_l']:.3f}"
                    f"  Persona-F1 {row['persona_f1']:.3f}  repeating {row['repeating']:.2f}"
                    f"  at the limit {row['at_limit']:.2f}",
                    flush=True,
                )
    result = {
        "split": "dev",
        "episodes": [e.id for e in episodes],
        "max_new_tokens": limit,
        "rows": rows,
        "replies": replies,
        "train": asdict(config.train),
        "seconds": time.perf_counter() - start,
        "meta": run_meta(sys.argv, args.base_model, {"msc": str(args.data / "msc")}, dtype_of(model)),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
