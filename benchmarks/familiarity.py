"""Another way to read a memory: familiarity instead of the answer token.

    .venv/bin/python benchmarks/familiarity.py --home HOME --user demo --probes src/paramem/demo_data/probes.jsonl

For each probe, how much the user's adapter raises the log-likelihood of the question's own words
over the base model (mean over the question tokens, in the prompt the memory was trained with): a
membership test, which needs no reasoning from a 0.5B reader. Printed beside the usual yes/no
log-odds of the memory and of the base model, as ranking AUCs (0.5 = no information), and their sum
after standardising each. An experiment, not part of the package: it ranks, it does not decide.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from paramem.evaluate.probes import load_probes
from paramem.metrics.yes_no import ranking_auc, ranking_auc_interval
from paramem.model.prompts import SYSTEM_PROMPT, _ids, _template_parts, encode_prompt
from paramem.model.scoring import YesNoScorer
from paramem.read.loading import load_memory


@torch.inference_mode()
def question_log_likelihoods(model, tokenizer, question: str) -> torch.Tensor:
    """log P of each question token given the prompt before it."""
    before = len(_ids(tokenizer, _template_parts(tokenizer, SYSTEM_PROMPT)[0]))
    length = len(_ids(tokenizer, question))
    ids = torch.tensor([encode_prompt(tokenizer, question)])
    log_probs = torch.log_softmax(model(ids).logits[0, :-1].float(), -1)
    per_token = log_probs.gather(1, ids[0, 1:, None])[:, 0]
    return per_token[before - 1 : before - 1 + length]


def standardised(values: list[float]) -> list[float]:
    mean, spread = statistics.mean(values), statistics.pstdev(values) or 1.0
    return [(v - mean) / spread for v in values]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", required=True, help="the memory home holding the user")
    parser.add_argument("--user", required=True)
    parser.add_argument("--probes", required=True, help="a yes/no probe file (DESIGN.md format)")
    args = parser.parse_args()

    model, tokenizer, _ = load_memory(args.user, Path(args.home))
    probes = load_probes(args.probes)
    questions, gold = [p.question for p in probes], [p.answer for p in probes]
    gains = []
    for question in questions:
        with_memory = question_log_likelihoods(model, tokenizer, question)
        with model.disable_adapter():
            without = question_log_likelihoods(model, tokenizer, question)
        gains.append((with_memory - without).mean().item())
    memory_odds = YesNoScorer(model, tokenizer).log_odds(questions)
    with model.disable_adapter():
        base_odds = YesNoScorer(model, tokenizer).log_odds(questions)
    combined = [a + b for a, b in zip(standardised(gains), standardised(memory_odds))]
    for name, scores in (
        ("familiarity (memory vs base)", gains),
        ("memory log-odds", memory_odds),
        ("none log-odds", base_odds),
        ("familiarity + memory log-odds", combined),
    ):
        low, high = ranking_auc_interval(gold, scores)
        print(f"{name:32s} ranking AUC {ranking_auc(gold, scores):.3f} [{low:.2f}, {high:.2f}]")


if __name__ == "__main__":
    main()
