"""Does learning a conversation get slower as a user's history grows? And does recall hold up?

    .venv/bin/python benchmarks/replay_scaling.py --base-model smollm2-135m --conversations 30 --replayed-cues 8

Learns the first N sessions of LoCoMo (real conversations, in the file's order, across samples) one
after the other into one memory, with the extractive teacher, and records for each conversation the
seconds it took and the examples and tokens of its epochs. Replay is bounded (`TrainConfig.
replayed_cues`): at most that many earlier recall cues per epoch, in rotation; `--replayed-cues 1000`
is the unbounded replay of before; the tokens that replay would have trained are also counted for
every conversation without training (`tokens_unbounded`). Then the memory recalls every learned
conversation from its date (the recall readout) and the script counts, per conversation, how many
of its topics are matched by what it recalled (cosine above the readout's threshold), against how
many are matched by the recollection of the other conversations' cues (chance).

Writes benchmarks/results/replay_scaling-<model>-cues<K>.json.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from paramem.augment.pairs import PairConfig
from paramem.augment.teachers.extractive import ExtractiveTeacher
from paramem.config import RememberConfig, TrainConfig
from paramem.data.formats import load_conversations
from paramem.evaluate.run import run_meta
from paramem.files import write_atomic
from paramem.lifecycle.remember import Callbacks, remember
from paramem.memory.trainer import SequentialTrainer
from paramem.model.compute import cpu_info
from paramem.model.loading import dtype_of
from paramem.read.loading import load_memory
from paramem.read.recall import SentenceMatcher, recollections

RESULTS = Path(__file__).parent / "results"


def epoch_tokens(tokenizer, train: TrainConfig, notes, position: int, replayed_cues: int) -> int:
    """Tokens the epochs of conversation `position` (1-based) train under a replay bound, counted
    without training (the same draws as training makes)."""
    config = replace(train, replayed_cues=replayed_cues)
    trainer = SequentialTrainer(None, tokenizer, config)  # counting only: no model is run
    rng = random.Random(f"{config.seed}/{notes[position - 1].conversation_id}")
    examples = [
        trainer._epoch_examples(notes[position - 1], notes[: position - 1], epoch, rng)[0]
        for epoch in range(1, config.epochs + 1)
    ]
    return sum(len(e.input_ids) for epoch in examples for e in epoch)


def token_summary(rows: list[dict]) -> dict:
    first, last = rows[: len(rows) // 3], rows[-(len(rows) // 3) :]
    out = {}
    for key in ("tokens", "tokens_unbounded"):
        if all(key in r for r in rows):
            out[f"mean_{key}_first_third"] = statistics.mean(r[key] for r in first)
            out[f"mean_{key}_last_third"] = statistics.mean(r[key] for r in last)
    return out


def count_only(args, conversations, train: TrainConfig) -> None:
    """The tokens each conversation's epochs train, bounded and unbounded, with no training at all:
    the teacher's notes as `remember` makes them, then the epochs' examples as the trainer draws them."""
    from paramem.augment.teachers.base import drop_contradicting_negatives
    from paramem.augment.teaching import augment
    from paramem.model.loading import load_model

    _, tokenizer = load_model(args.base_model)
    notes = augment(conversations, ExtractiveTeacher(), None)
    notes = drop_contradicting_negatives(notes, [c.text for c in conversations])
    rows = [
        {
            "position": i,
            "id": c.id,
            "tokens": epoch_tokens(tokenizer, train, notes, i, args.replayed_cues),
            "tokens_unbounded": epoch_tokens(tokenizer, train, notes, i, 1000),
        }
        for i, c in enumerate(conversations, start=1)
    ]
    out = RESULTS / f"replay_scaling-{args.base_model}-cues{args.replayed_cues}-counts.json"
    payload = {
        **run_meta(sys.argv, args.base_model, {"conversations": len(rows)}),
        "settings": vars(args),
        "summary": token_summary(rows),
        "per_conversation": rows,
    }
    write_atomic(out, json.dumps(payload, indent=1))
    print(json.dumps(payload["summary"], indent=1))
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-model", default="smollm2-135m")
    parser.add_argument("--data", default="../shared/data", help="folder holding locomo/locomo8.json")
    parser.add_argument("--conversations", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max-pairs", type=int, default=20, help="pairs per conversation and epoch (PLUM: ~20)")
    parser.add_argument("--replayed-cues", type=int, default=TrainConfig().replayed_cues)
    parser.add_argument("--no-recall", action="store_true", help="skip the recall check at the end")
    parser.add_argument(
        "--count-only",
        action="store_true",
        help="count each conversation's training tokens, bounded and unbounded, without training (seconds)",
    )
    args = parser.parse_args()

    path = Path(args.data) / "locomo" / "locomo8.json"
    conversations = load_conversations(path, "locomo")[: args.conversations]
    train = TrainConfig(
        epochs=args.epochs,
        min_epochs=args.epochs,
        early_stopping=False,
        replayed_cues=args.replayed_cues,
        pairs=PairConfig(max_pairs=args.max_pairs),
    )
    if args.count_only:
        count_only(args, conversations, train)
        return
    config = RememberConfig(base_model=args.base_model, train=train)
    rows: list[dict] = []
    epochs: list[dict] = []

    def on_epoch(report) -> None:
        epochs.append(
            {
                "conversation": report.conversation,
                "epoch": report.epoch,
                "seconds": report.seconds,
                "tokens": report.tokens,
            }
        )

    def on_learned(record) -> None:
        rows.append(
            {"position": len(rows) + 1, "id": record.id, "seconds": record.seconds, "qa_pairs": record.qa_pairs}
        )
        print(f"{len(rows):3d} {record.id}: {record.seconds:.1f} s", flush=True)

    with tempfile.TemporaryDirectory() as home:
        start = time.perf_counter()
        remember(
            "bench",
            conversations,
            ExtractiveTeacher(),
            config,
            Path(home),
            Callbacks(on_epoch=on_epoch, on_learned=on_learned),
        )
        total = time.perf_counter() - start
        recall = None
        if not args.no_recall:
            model, tokenizer, memory = load_memory("bench", Path(home))
            dtype = dtype_of(model)
            notes = memory.notes()
            for row in rows:  # the epochs' work as trained, and had every earlier cue been replayed (before)
                row["tokens"] = epoch_tokens(tokenizer, train, notes, row["position"], args.replayed_cues)
                row["tokens_unbounded"] = epoch_tokens(tokenizer, train, notes, row["position"], 1000)
            recalled = recollections(model, tokenizer, memory)
            own, other = [], []
            for index, conversation_notes in enumerate(notes):
                topics = [t.name for t in conversation_notes.topics]
                if not topics:
                    continue
                mine = SentenceMatcher([recalled[index]]).scores(topics)
                rest = SentenceMatcher([r for i, r in enumerate(recalled) if i != index]).scores(topics)
                own.append(sum(s > 0 for s in mine) / len(topics))
                other.append(sum(s > 0 for s in rest) / len(topics))
            recall = {
                "own_cue_topic_hit_rate": statistics.mean(own),
                "other_cues_topic_hit_rate": statistics.mean(other),
                "per_conversation_own": own,
            }
        else:
            dtype = None

    first, last = rows[: len(rows) // 3], rows[-(len(rows) // 3) :]
    summary = {
        "conversations": len(rows),
        "total_seconds": total,
        "mean_seconds_first_third": statistics.mean(r["seconds"] for r in first),
        "mean_seconds_last_third": statistics.mean(r["seconds"] for r in last),
        **token_summary(rows),
    }
    payload = {
        **run_meta(sys.argv, args.base_model, {"locomo": str(path)}, dtype),
        "cpu": cpu_info(),
        "settings": vars(args),
        "summary": summary,
        "recall": recall,
        "per_conversation": rows,
        "epochs": epochs,
    }
    out = RESULTS / f"replay_scaling-{args.base_model}-cues{args.replayed_cues}.json"
    write_atomic(out, json.dumps(payload, indent=1))
    print(
        json.dumps(
            {"summary": summary, "recall": recall and {k: v for k, v in recall.items() if not k.startswith("per_")}},
            indent=1,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
