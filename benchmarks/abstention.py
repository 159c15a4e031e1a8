"""Does the base model say "not mentioned" when it reads the sessions and is asked about what they
never said? The distilled memory learns the base model's answers with the sessions in its prompt, so
it can say it does not know only if that teacher does.

    .venv/bin/python benchmarks/abstention.py [--sample 0] [--questions 8]

On a LoCoMo development sample (0-3; the prompt wording is a design choice), three kinds of open
question: its category-5 ones (adversarial: what one speaker did, asked of the other), questions about
things never discussed (other samples' single-hop questions renamed to this sample's speakers, their
words absent from the sessions) and answerable single- and multi-hop ones. Each answered greedily
under the context method's prompt, as it is and with an instruction to say when the sessions do not
say. Prints how often each kind is answered "not mentioned" and the answerable F1, and writes
benchmarks/results/abstention-sS.json with every reply.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from paramem.config import DEFAULT_MODEL
from paramem.evaluate.locomo import NOT_MENTIONED, build_locomo, never_discussed_questions, open_score
from paramem.evaluate.run import context_prompt, run_meta
from paramem.model.loading import dtype_of, load_model
from paramem.model.prompts import SYSTEM_PROMPT
from paramem.read.answer import answer_many

INSTRUCTION = " If the conversations do not say, answer that it was not mentioned."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sample", type=int, default=0)
    parser.add_argument("--questions", type=int, default=8, help="of each kind: never said, answerable")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--base-model", default=DEFAULT_MODEL)
    args = parser.parse_args()
    path = args.data / "locomo" / "locomo8.json"
    bench = build_locomo(path, args.sample, 6, 8)
    kinds = {
        "adversarial": [q for q in bench.open_questions if q.category == 5][: args.questions],
        "never discussed": never_discussed_questions(path, bench, args.questions),
        "answerable": [q for q in bench.open_questions if q.category in (1, 4)][: args.questions],
    }
    questions = [q for kind in kinds.values() for q in kind]
    kind_of = [name for name, kind in kinds.items() for _ in kind]
    model, tokenizer = load_model(args.base_model)
    plain = context_prompt(tokenizer, bench.conversations)
    prompts = {"as is": plain, "instructed": plain.replace(SYSTEM_PROMPT, SYSTEM_PROMPT + INSTRUCTION, 1)}
    variants = {}
    for name, system in prompts.items():
        started = time.perf_counter()
        replies = answer_many(model, tokenizer, [q.question for q in questions], [system] * len(questions), 32)
        rows = [
            {
                "kind": kind,
                "category": q.category,
                "question": q.question,
                "gold": q.answer,
                "reply": reply,
                "abstains": bool(NOT_MENTIONED.search(reply)),
                "score": open_score(q, reply),
            }
            for q, reply, kind in zip(questions, replies, kind_of)
        ]
        said = {kind: [r for r in rows if r["kind"] == kind] for kind in kinds}
        variants[name] = {
            "says_not_mentioned": {kind: sum(r["abstains"] for r in r_) / len(r_) for kind, r_ in said.items()},
            "answerable_f1": sum(r["score"] for r in said["answerable"]) / len(said["answerable"]),
            "seconds": round(time.perf_counter() - started, 1),
            "replies": rows,
        }
        shares = ", ".join(f"{kind} {share:.2f}" for kind, share in variants[name]["says_not_mentioned"].items())
        print(f"{name}: says not mentioned on {shares}; answerable F1 {variants[name]['answerable_f1']:.3f}")
    meta = run_meta(sys.argv, args.base_model, {"locomo": str(args.data / "locomo")}, dtype_of(model))
    counts = {kind: len(q) for kind, q in kinds.items()}
    payload = {**meta, "sample": bench.sample_id, "questions": counts, "instruction": INSTRUCTION.strip()}
    payload["variants"] = variants
    out = Path(__file__).parent / "results" / f"abstention-s{args.sample}.json"
    out.write_text(json.dumps(payload, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
