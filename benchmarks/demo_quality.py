"""Demo-set quality, side by side: every method on the same base model, probes and decision rule.

    .venv/bin/python benchmarks/demo_quality.py --base-model qwen2.5-0.5b --epochs 4

Learns the 8 demo conversations into a fresh memory, then scores every method on the 48 demo
probes, under each readout (log-odds of the answer token; recall, for none / memory / context).
Writes benchmarks/results/demo_quality-<model>-<tag>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from paramem.augment.pairs import PairConfig, heldout_pairs
from paramem.augment.teachers import make_teacher
from paramem.cli.demo import demo_files, seed_teacher_cache
from paramem.cli.progress import learn_with_progress, print_results
from paramem.config import RememberConfig, TrainConfig
from paramem.data.formats import load_conversations
from paramem.evaluate.probes import load_probes
from paramem.evaluate.run import METHODS, RECALL_METHODS, evaluate_yes_no, run_meta
from paramem.read.loading import load_memory
from paramem.read.recall import RecallConfig, recall_cues

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-model", default="qwen2.5-0.5b")
    parser.add_argument("--teacher", default="shipped", help="shipped (the demo's notes), extractive or local")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--lr", default="5e-4", help="one rate, or several comma-separated: the best held-out is kept")
    parser.add_argument("--qa-weight", type=float, default=10.0)
    parser.add_argument("--replay", type=float, default=0.3)
    parser.add_argument("--layers", default=None, help="e.g. 12-23: only these layers carry LoRA")
    parser.add_argument("--no-statements", action="store_true")
    parser.add_argument(
        "--max-pairs", type=int, default=None, help="pairs per conversation and epoch (recall pair kept)"
    )
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--tag", default="default")
    parser.add_argument(
        "--home",
        default=None,
        help="keep the learned memory here (default: a temporary folder); what it holds is not learned again",
    )
    parser.add_argument(
        "--branches", type=int, default=RecallConfig().branches, help="recollections per cue in the recall readout"
    )
    parser.add_argument("--readouts", default="log-odds,recall", help="how each method is read (evaluate/run.py)")
    args = parser.parse_args()

    conversations_file, probes_file, notes_file = demo_files()
    conversations = load_conversations(conversations_file)
    probes = load_probes(probes_file, {c.id for c in conversations})
    kind = seed_teacher_cache(notes_file, conversations) if args.teacher == "shipped" else args.teacher
    teacher = make_teacher(kind or "extractive")
    layers = None
    if args.layers:
        low, high = (int(x) for x in args.layers.split("-"))
        layers = list(range(low, high + 1))
    rates = [float(r) for r in args.lr.split(",")]
    train = TrainConfig(
        epochs=args.epochs,
        learning_rate=rates[0],
        learning_rates=rates if len(rates) > 1 else None,
        qa_weight=args.qa_weight,
        replay_share=args.replay,
        layers=layers,
        pairs=PairConfig(statements=not args.no_statements, max_pairs=args.max_pairs),
    )
    config = RememberConfig(base_model=args.base_model, train=train)
    with tempfile.TemporaryDirectory() as scratch:
        home = args.home or scratch
        start = time.perf_counter()
        learned = learn_with_progress("bench", conversations, teacher, config, Path(home))
        train_seconds = time.perf_counter() - start
        model, tokenizer, memory = load_memory("bench", Path(home))
        notes = memory.notes()
        results = []
        for readout in args.readouts.split(","):
            methods = [m for m in args.methods.split(",") if readout != "recall" or m in RECALL_METHODS]
            read = evaluate_yes_no(
                model,
                tokenizer,
                probes,
                methods,
                conversations,
                heldout_pairs(notes),
                readout=readout,
                cues=recall_cues(notes),
                recall=RecallConfig(branches=args.branches),
            )
            print_results(
                f"{args.base_model}, teacher {teacher.name}, {args.epochs} epochs max, {readout} readout", read
            )
            results += read
    print(f"learning: {train_seconds:.0f} s for {len(conversations)} conversations")
    out = RESULTS / f"demo_quality-{args.base_model}-{args.tag}.json"
    payload = {
        **run_meta(
            sys.argv,
            args.base_model,
            {"conversations": str(conversations_file), "probes": str(probes_file), "teacher": teacher.name},
        ),
        "settings": vars(args),
        "train_seconds": round(train_seconds, 1),
        "conversations": [vars(r) for r in learned],
        "methods": [r.to_dict() for r in results],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=1), encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
