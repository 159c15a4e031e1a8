"""Context distillation: the memory learns to answer as the same model answers with the conversation in
its prompt (Cartridges / self-study, arXiv 2506.06266; knowledge modules, arXiv 2503.08727).

  teacher  the base model (adapter off) with the conversation, and its date, in the system prompt
           (right after paramem's, where a cartridge sits in the student's: cartridge.py);
           for each query it answers greedily, and at every answer position its top-k log-probabilities
           are kept. The conversation is read once per conversation (its keys and values are reused
           for every query), and the targets never change while it is learned: they are computed once
           and kept across epochs and learning rates, and stored with the memory, so that replay of
           earlier conversations reads the stored targets, not the raw text.
  student  the base model with the memory, asked the same query with paramem's short system prompt and
           no conversation; it learns by KL(teacher top-k || student) at every answer position, and,
           with `distill_hidden_weight`, by matching the teacher's hidden states there too (deep
           context distillation); those are kept only while their conversation is learned: at the
           model's width a position and layer (1.8 KB in bf16 on the 0.5B model) they would
           outweigh the stored targets many times over.

`TrainConfig.objective = "distill"` selects it; PLUM's weighted cross-entropy stays the default until
a measurement says otherwise.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from paramem.memory.batching import length_buckets
from paramem.memory.distill_teacher import DistillTarget, matched_layers
from paramem.model.loading import decoder_and_head
from paramem.model.prompts import encode_prompt


@dataclass(frozen=True)
class DistillExample:
    input_ids: list[int]  # the student's prompt (no conversation), then the teacher's answer
    answer_start: int  # index of the first answer token in input_ids
    top_ids: list[list[int]]
    top_logprobs: list[list[float]]
    weight: float = 1.0  # how much each of its answer positions counts in the loss
    hidden: torch.Tensor | None = None  # the teacher's hidden states there, (layers, answer tokens, width)


def encode_target(tokenizer: PreTrainedTokenizerBase, target: DistillTarget, weight: float = 1.0) -> DistillExample:
    """The student's view of a target: the question asked without the conversation, then the answer."""
    prompt = encode_prompt(tokenizer, target.question)
    return DistillExample(
        prompt + target.answer_ids, len(prompt), target.top_ids, target.top_logprobs, weight, target.hidden
    )


def distill_batches(
    examples: list[DistillExample], batch_size: int, pad_id: int, rng: random.Random
) -> list[dict[str, torch.Tensor]]:
    """Length-bucketed batches in shuffled order, with the answer positions marked: position t of
    `predict` is True when the token at t + 1 is an answer token, whose teacher targets follow in
    row-major order in `top_ids` / `top_logprobs`. Where any example carries the teacher's hidden
    states, `hidden` holds them in the same order, (positions, layers, width), and `has_hidden`
    marks the positions that have them (replayed targets do not)."""
    out = []
    for rows in length_buckets(examples, batch_size, rng):
        batch = _padded_batch(rows, pad_id)
        carried = [r.hidden for r in rows if r.hidden is not None]
        if carried:
            layers, _, width = carried[0].shape
            batch["hidden"] = torch.cat(
                [
                    r.hidden.transpose(0, 1)
                    if r.hidden is not None
                    else carried[0].new_zeros(len(r.top_ids), layers, width)
                    for r in rows
                ]
            )
            batch["has_hidden"] = torch.tensor(
                [r.hidden is not None for r in rows for _ in r.top_ids], dtype=torch.bool
            )
        out.append(batch)
    return out


def _padded_batch(rows: list[DistillExample], pad_id: int) -> dict[str, torch.Tensor]:
    """The rows right-padded to the longest, their answer positions marked, their teacher targets
    concatenated in row-major order."""
    width = max(len(r.input_ids) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    predict = torch.zeros((len(rows), width), dtype=torch.bool)
    top_ids, top_logprobs, weights = [], [], []
    for row, example in enumerate(rows):
        n = len(example.input_ids)
        ids[row, :n] = torch.tensor(example.input_ids)
        mask[row, :n] = 1
        predict[row, example.answer_start - 1 : n - 1] = True
        top_ids += example.top_ids
        top_logprobs += example.top_logprobs
        weights += [example.weight] * len(example.top_ids)
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "predict": predict,
        "top_ids": torch.tensor(top_ids),
        "top_logprobs": torch.tensor(top_logprobs),
        "weights": torch.tensor(weights),
    }


def kl_to_top_k(
    student_logits: torch.Tensor,
    top_ids: torch.Tensor,
    top_logprobs: torch.Tensor,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean over positions (weighted by `weights`, when given) of KL(p || q): p the teacher's
    distribution over its top-k tokens (renormalised over them), q the student's full softmax read at
    those tokens."""
    teacher = top_logprobs.float().log_softmax(-1)
    student = student_logits.float().log_softmax(-1).gather(-1, top_ids)
    per_position = (teacher.exp() * (teacher - student)).sum(-1)
    if weights is None:
        return per_position.mean()
    return (per_position * weights).sum() / weights.sum()


def hidden_distance(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean over positions and layers of |student - teacher|_1 / |teacher|_1, deep context
    distillation's distance: normalised per layer, so that layers of larger activations do not
    dominate and the weight beside the KL means the same for any model."""
    student, teacher = student.float(), teacher.float()
    return ((student - teacher).abs().sum(-1) / teacher.abs().sum(-1).clamp_min(1e-6)).mean()


def distillation_loss(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], hidden_weight: float = 0.0
) -> torch.Tensor:
    """`kl_to_top_k` of a batch, the vocabulary head run only at answer positions; with `hidden_weight`
    and the teacher's hidden states in the batch, plus that weight times their `hidden_distance` at
    the positions that have them, at the same `matched_layers` the teacher's were taken at."""
    decoder, head = decoder_and_head(model)
    matching = hidden_weight > 0 and "hidden" in batch
    out = decoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=matching)
    predict = batch["predict"]
    loss = kl_to_top_k(
        head(out.last_hidden_state[predict]), batch["top_ids"], batch["top_logprobs"], batch.get("weights")
    )
    if matching:
        layers = matched_layers(model.config.num_hidden_layers, batch["hidden"].shape[1])
        student = torch.stack([out.hidden_states[layer][predict] for layer in layers], dim=1)
        kept = batch["has_hidden"]
        loss = loss + hidden_weight * hidden_distance(student[kept], batch["hidden"][kept])
    return loss
