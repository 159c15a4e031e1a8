"""Open questions answered one at a time (`generate`) against a batch at a time (`answer_many`).

    .venv/bin/python benchmarks/open_answers.py --sample 0 --questions 32 --methods context,dense

The base model answers the same LoCoMo open questions (the first 6 sessions of a sample, questions
spread over the categories) under each method's system prompts, three ways, in one process:
- `generate`: how `answer_many` answered until session 16, each question by `model.generate`, the
  shared start of consecutive prompts with the same system prompt read once and copied;
- `rows=1`: today's `answer_many` with one row at a time (its decoding loop, no batching);
- `batched`: today's `answer_many` (decode.py).
Printed and written to benchmarks/results/open_answers.json (with every answer): seconds per answer
for each, and how many answers equal `generate`'s, since batching must not change what is answered
(in float32; bf16 rounds sums over a batch differently, and greedy decoding amplifies it).
Development data by default (sample 0); the batch size is not a quality setting.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

import paramem.read.answer as answer
from paramem.config import DEFAULT_MODEL
from paramem.errors import InputError
from paramem.evaluate.experiment import spread_over_categories
from paramem.evaluate.locomo import build_locomo
from paramem.evaluate.run import run_meta, system_prompts
from paramem.model.loading import load_model
from paramem.model.prompts import encode_prompt
from paramem.read.retrieval import RetrievalConfig


@torch.inference_mode()
def one_by_one(model, tokenizer, questions: list[str], systems: list[str], max_new_tokens: int) -> list[str]:
    """The answers as `answer_many` gave them before batching: `generate` per question, after a copy
    of the start shared by consecutive questions with the same system prompt."""
    replies, start = [], 0
    while start < len(questions):
        end = start
        while end < len(questions) and systems[end] == systems[start]:
            end += 1
        prompts = [encode_prompt(tokenizer, q, systems[start]) for q in questions[start:end]]
        shared = answer.common_prefix_length(prompts) - 1
        prefix = None
        if shared > 0 and end - start > 1:
            prefix = model(input_ids=torch.tensor([prompts[0][:shared]]), use_cache=True).past_key_values
        for prompt in prompts:
            extra = {"past_key_values": copy.deepcopy(prefix)} if prefix is not None else {}
            ids = torch.tensor([prompt])
            output = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                **extra,
            )
            replies.append(tokenizer.decode(output[0, len(prompt) :], skip_special_tokens=True).strip())
        start = end
    return replies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/locomo/locomo8.json")
    parser.add_argument("--sample", type=int, default=0)
    parser.add_argument("--questions", type=int, default=32)
    parser.add_argument("--methods", default="context,dense")
    parser.add_argument("--tokens", type=int, default=48, help="longest answer, as `paramem locomo` allows")
    parser.add_argument("--base-model", default=DEFAULT_MODEL)
    parser.add_argument("--dtype", default=None, help="float32 or bfloat16 (default: the faster on this CPU)")
    parser.add_argument("--out", default="benchmarks/results/open_answers.json")
    args = parser.parse_args(argv)
    try:
        bench = build_locomo(args.data, args.sample)
    except (InputError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    model, tokenizer = load_model(args.base_model, args.dtype)
    questions = [q.question for q in spread_over_categories(bench.open_questions, args.questions)]
    ways = {
        "generate": lambda q, s: one_by_one(model, tokenizer, q, s, args.tokens),
        "rows=1": lambda q, s: answer.answer_many(model, tokenizer, q, s, args.tokens),
        "batched": lambda q, s: answer.answer_many(model, tokenizer, q, s, args.tokens),
    }
    rows, budget = [], answer.KV_COPY_BUDGET
    for method in args.methods.split(","):
        systems = system_prompts(method, tokenizer, bench.conversations, RetrievalConfig())(questions)
        reference = None
        for way, answer_all in ways.items():
            answer.KV_COPY_BUDGET = 1 if way == "rows=1" else budget
            start = time.perf_counter()
            replies = answer_all(questions, systems)
            seconds = time.perf_counter() - start
            reference = reference or replies
            row = {
                "method": method,
                "way": way,
                "questions": len(questions),
                "seconds_per_answer": round(seconds / len(questions), 3),
                "same_as_generate": sum(a == b for a, b in zip(reference, replies)),
                "prompt_tokens": round(
                    sum(len(encode_prompt(tokenizer, q, s)) for q, s in zip(questions, systems)) / len(questions)
                ),
            }
            print(json.dumps(row), flush=True)
            rows.append({**row, "answers": replies})

    result = {
        **run_meta(sys.argv, args.base_model, {"locomo": args.data}, str(next(model.parameters()).dtype)),
        "sample": args.sample,
        "torch_threads": torch.get_num_threads(),
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print("| method | way | prompt tokens | s/answer | answers as generate's |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['method']} | {r['way']} | {r['prompt_tokens']} | {r['seconds_per_answer']} | "
            f"{r['same_as_generate']}/{r['questions']} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
