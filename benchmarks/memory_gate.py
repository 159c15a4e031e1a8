"""When the memory alone should say "I don't know" (issue 38, privacy mode): two signals, on LoCoMo
development samples, for open questions answerable from the learned sessions, asked of the wrong
speaker (category 5) and never discussed.

    .venv/bin/python benchmarks/memory_gate.py [--samples 0,1] [--sessions 6]

Each sample's memory is the one benchmarks/complement.py learned (benchmarks/results/complement/home,
user s<sample>-<sessions>), read alone as the answer path reads it when no text is kept:

  support      the shipped check: the memory asked MEMORY_SUPPORT_QUESTION about the question, its
               margin under the memory's own rule (below 0 abstains)
  familiarity  how much the memory raises the log-likelihood of the question's own tokens over the
               base model (benchmarks/familiarity.py): a membership test that needs no reasoning

Per sample and signal: the share below 0 of each kind, and the AUC of answerable against each
unanswerable kind (0.5: no information). Writes benchmarks/results/memory_gate-<model>-<dtype>.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from answer_path import KINDS, questions_of
from complement import HOME
from familiarity import question_log_likelihoods

from paramem.config import DEFAULT_MODEL
from paramem.evaluate.run import run_meta, write_results
from paramem.metrics.yes_no import ranking_auc
from paramem.model.loading import dtype_of
from paramem.read.loading import load_memory
from paramem.read.respond import Responder

RESULTS = Path(__file__).parent / "results"


def signals(user: str, sample: int, sessions: int, never: int) -> dict:
    model, tokenizer, memory = load_memory(user, HOME)
    _, rows = questions_of(sample, sessions, never)
    questions = [q.question for q, _ in rows]
    _, _, support = Responder(model, tokenizer, [], memory).support(questions)
    familiarity = []
    for question in questions:
        with_memory = question_log_likelihoods(model, tokenizer, question)
        with model.disable_adapter():
            without = question_log_likelihoods(model, tokenizer, question)
        familiarity.append(round((with_memory - without).mean().item(), 4))
    return {
        "dtype": dtype_of(model),
        "questions": questions,
        "kinds": [kind for _, kind in rows],
        "support": [round(s, 4) for s in support],
        "familiarity": familiarity,
    }


def summary(scored: dict) -> dict:
    out = {}
    for signal in ("support", "familiarity"):
        by_kind = {k: [v for v, kind in zip(scored[signal], scored["kinds"]) if kind == k] for k in KINDS}
        out[signal] = {
            "below_0": {k: round(sum(v < 0 for v in vs) / len(vs), 2) for k, vs in by_kind.items() if vs},
            "auc_against_answerable": {
                k: round(ranking_auc(["yes"] * len(by_kind[KINDS[0]]) + ["no"] * len(vs), by_kind[KINDS[0]] + vs), 3)
                for k, vs in by_kind.items()
                if k != KINDS[0] and vs
            },
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", default="0,1", help="LoCoMo development samples learned by complement.py")
    parser.add_argument("--sessions", type=int, default=6)
    parser.add_argument("--never", type=int, default=20, help="never-discussed questions per sample")
    args = parser.parse_args()
    per_sample, dtype = {}, None
    for sample in (int(s) for s in args.samples.split(",")):
        scored = signals(f"s{sample}-{args.sessions}", sample, args.sessions, args.never)
        dtype = scored.pop("dtype")
        summarised = summary(scored)
        per_sample[sample] = {**summarised, "scored": scored}
        print(f"sample {sample}: {summarised}", flush=True)
    result = {**run_meta(sys.argv, DEFAULT_MODEL, {"home": str(HOME)}, dtype), "per_sample": per_sample}
    write_results(RESULTS / f"memory_gate-{DEFAULT_MODEL}-{dtype}.json", result)


if __name__ == "__main__":
    main()
