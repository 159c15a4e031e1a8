"""The distilled memory's teacher, its questions answered one at a time against a batch at a time.

    .venv/bin/python benchmarks/teacher_batch.py --sample 0 --session 1 --batches 1,16

The teacher (the base model reading one LoCoMo session) does its whole default job for that session,
once per batch size, in one process: reading the session, writing its self-study queries and yes/no
checks, answering every query (32 tokens at most) and check (1 token) with its top-20
log-probabilities. Printed and written to benchmarks/results/teacher_batch.json: seconds per stage for
each batch size, and how far each batch size's targets are from the first's (the same questions, the
same answers, the largest difference of a kept log-probability), since batching must not change what
is learned. Self-study's sampled queries (beyond one greedy answer per seed) are drawn in another
order when batched, so those few questions differ by design.
Development data by default (sample 0); the batch size is not a quality setting.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

import paramem.memory.distill as distill
from paramem.augment.teachers.extractive import ExtractiveTeacher
from paramem.config import DEFAULT_MODEL, TrainConfig
from paramem.errors import InputError
from paramem.evaluate.locomo import build_locomo
from paramem.evaluate.run import run_meta
from paramem.model.loading import load_model


def difference(reference: list[distill.DistillTarget], targets: list[distill.DistillTarget]) -> dict:
    """How the targets compare with the reference's, question by question: the questions both asked
    (greedy ones must match; self-study's sampled queries are drawn in another order when batched),
    how many of those got the same answer, and the largest gap between a log-probability both kept
    over the same answers (float sums in another order)."""
    theirs = {t.question: t for t in targets}
    shared = [(t, theirs[t.question]) for t in reference if t.question in theirs]
    same = [(a, b) for a, b in shared if a.answer_ids == b.answer_ids]
    gap = 0.0
    for a, b in same:
        for ids_a, lp_a, ids_b, lp_b in zip(a.top_ids, a.top_logprobs, b.top_ids, b.top_logprobs):
            kept = dict(zip(ids_b, lp_b))
            gap = max([gap] + [abs(v - kept[i]) for i, v in zip(ids_a, lp_a) if i in kept])
    return {
        "targets": len(targets),
        "shared_questions": len(shared),
        "same_answers": len(same),
        "largest_logprob_gap": round(gap, 5),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/locomo/locomo8.json")
    parser.add_argument("--sample", type=int, default=0)
    parser.add_argument("--session", type=int, default=1, help="which session of the sample, from 1")
    parser.add_argument("--batches", default="1,16", help="batch sizes, the first is the reference")
    parser.add_argument("--base-model", default=DEFAULT_MODEL)
    parser.add_argument("--out", default="benchmarks/results/teacher_batch.json")
    args = parser.parse_args(argv)

    try:
        sessions = build_locomo(args.data, args.sample, args.session).conversations
    except (InputError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not 1 <= args.session <= len(sessions):
        print(f"error: sample {args.sample} has no session {args.session}", file=sys.stderr)
        return 2
    conversation = sessions[args.session - 1]
    model, tokenizer = load_model(args.base_model)
    notes = ExtractiveTeacher().notes(conversation)
    config = TrainConfig(objective="distill")  # the default query budget, self-study and checks
    rows, reference = [], None
    for batch in [int(b) for b in args.batches.split(",")]:
        distill.TEACHER_BATCH = batch
        targets, cost = distill.teacher_targets(model, tokenizer, conversation, notes, config)
        reference = reference or targets
        row = {
            "batch": batch,
            "prefill_seconds": round(cost.prefill_seconds, 1),
            "writing_seconds": round(cost.writing_seconds, 1),
            "answering_seconds": round(cost.answering_seconds, 1),
            "seconds": round(cost.seconds, 1),
            "queries": cost.queries,
            **difference(reference, targets),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)

    result = {
        **run_meta(sys.argv, args.base_model, {"locomo": args.data}, str(next(model.parameters()).dtype)),
        "conversation": conversation.id,
        "conversation_tokens": len(distill.conversation_slot(tokenizer, conversation, notes.date)),
        "torch_threads": torch.get_num_threads(),
        "config": {k: getattr(config, k) for k in ("distill_queries", "self_study_queries", "distill_checks")},
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print("| batch | prefill s | writing s | answering s | total s | questions as the first's | same answers | gap |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['batch']} | {r['prefill_seconds']} | {r['writing_seconds']} | {r['answering_seconds']} | "
            f"{r['seconds']} | {r['shared_questions']}/{r['targets']} | {r['same_answers']} | "
            f"{r['largest_logprob_gap']} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
