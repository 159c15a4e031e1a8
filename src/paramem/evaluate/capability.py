"""General capability retention: MMLU (5-shot) and ARC-Challenge (5-shot), the base model against
the same model with a memory adapter, scored by the letter with the highest next-token logit.

The prompts are the plain-text format of the MMLU paper, not the chat template: what is measured is
the model's knowledge, not its chat format. Items sharing their few-shot block (an MMLU subject, all
of ARC) share one KV cache, so a subset runs in minutes on a CPU.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from paramem.model.loading import decoder_and_head
from paramem.model.scoring import first_token_ids, head_rows, last_hidden_states

LETTERS = "ABCD"


@dataclass(frozen=True)
class ChoiceItem:
    group: str  # items of one group share their few-shot block (MMLU: the subject)
    prompt: str  # few-shot block + this question, ending in "Answer:"
    answer: str  # "A".."D"


def _format(question: str, choices: list[str], answer: str | None = None) -> str:
    lines = [question, *(f"{letter}. {choice}" for letter, choice in zip(LETTERS, choices))]
    return "\n".join(lines) + "\nAnswer:" + (f" {answer}\n\n" if answer else "")


def _mmlu_rows(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as handle:  # some files hold CRLF and quoted newlines
        return [row for row in csv.reader(handle) if len(row) == 6]


def load_mmlu(
    root: str | Path, per_subject: int | None = 10, subjects: int | None = 10, shots: int = 5
) -> list[ChoiceItem]:
    """MMLU test items, `per_subject` from each of `subjects` subjects spread over the alphabet
    (None: all), each after `shots` examples from the subject's dev split."""
    root = Path(root)
    names = sorted(p.name[: -len("_test.csv")] for p in (root / "test").glob("*_test.csv"))
    if subjects is not None and subjects < len(names):
        step = len(names) / subjects
        names = [names[int(i * step)] for i in range(subjects)]
    items = []
    for subject in names:
        header = f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"
        examples = "".join(_format(r[0], r[1:5], r[5]) for r in _mmlu_rows(root / "dev" / f"{subject}_dev.csv")[:shots])
        rows = _mmlu_rows(root / "test" / f"{subject}_test.csv")
        for row in rows[:per_subject] if per_subject is not None else rows:
            items.append(ChoiceItem(subject, header + examples + _format(row[0], row[1:5]), row[5].strip()))
    return items


def _arc_item(record: dict) -> tuple[str, list[str], str] | None:
    choices = record["question"]["choices"]
    if len(choices) != 4:  # a few items have 3 or 5 choices; the letter set stays A-D
        return None
    labels = [c["label"] for c in choices]
    return record["question"]["stem"], [c["text"] for c in choices], LETTERS[labels.index(record["answerKey"])]


def load_arc(root: str | Path, limit: int | None = 100, shots: int = 5) -> list[ChoiceItem]:
    """ARC-Challenge test items (labels "1".."4" become "A".."D"), after `shots` train examples."""
    root = Path(root)

    def read(split: str):
        lines = (root / f"ARC-Challenge-{split}.jsonl").read_text(encoding="utf-8").splitlines()
        return [item for line in lines if line.strip() for item in [_arc_item(json.loads(line))] if item]

    examples = "".join(_format(q, c, a) for q, c, a in read("Train")[:shots])
    header = "The following are multiple choice questions (with answers) about science.\n\n"
    test = read("Test")
    return [ChoiceItem("arc", header + examples + _format(q, c), a) for q, c, a in test[:limit]]


@torch.inference_mode()
def choice_accuracy(model, tokenizer, items: list[ChoiceItem], batch_size: int = 8) -> dict:
    """Accuracy (and n, seconds) of picking the letter whose next-token logit is highest."""
    decoder, _ = decoder_and_head(model)
    letter_ids = [first_token_ids(tokenizer, [letter]) for letter in LETTERS]
    rows = [head_rows(model, ids) for ids in letter_ids]
    start, correct = time.perf_counter(), 0
    groups: dict[str, list[ChoiceItem]] = {}
    for item in items:
        groups.setdefault(item.group, []).append(item)
    for group in groups.values():
        prompts = [tokenizer(item.prompt, add_special_tokens=False)["input_ids"] for item in group]
        last = last_hidden_states(decoder, prompts, tokenizer.pad_token_id, batch_size)
        scores = torch.stack([(last @ w.T + b).logsumexp(-1) for w, b in rows], dim=-1)
        correct += sum(LETTERS[i] == item.answer for i, item in zip(scores.argmax(-1).tolist(), group))
    return {"accuracy": correct / len(items), "n": len(items), "seconds": round(time.perf_counter() - start, 1)}
