"""The pieces every trainer shares: PLUM's weighted cross-entropy and length-bucketed batches."""

from __future__ import annotations

import random

import torch

from paramem.model.loading import decoder_and_head
from paramem.model.prompts import Encoded


def weighted_cross_entropy(logits: torch.Tensor, input_ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """PLUM's loss: sum over tokens of weight x CE(next token), divided by the number of trained tokens.

    `weights[b, i]` is the weight of predicting token i from tokens < i; padding has weight 0. Dividing
    by a count rather than by the weight sum keeps lambda a true multiplier: a token of weight lambda
    contributes exactly lambda times the gradient of a token of weight 1.
    """
    logits = logits[:, :-1].float()
    targets = input_ids[:, 1:]
    token_weights = weights[:, 1:]
    losses = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="none"
    ).view_as(targets)
    trained = (token_weights > 0).sum().clamp(min=1)
    return (losses * token_weights).sum() / trained


def training_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """`weighted_cross_entropy` of a batch, computed without wasted work: the vocabulary head (a large
    share of the FLOPs of a small model) runs only at positions that carry loss weight, so padding
    never reaches it and no [batch x length x vocabulary] tensor is ever made."""
    decoder, head = decoder_and_head(model)
    hidden = decoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    return loss_at_weights(head, hidden, batch)


def loss_at_weights(head: torch.nn.Module, hidden: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """`weighted_cross_entropy` from the decoder's hidden states, one per input token: the head runs
    only where the loss has weight."""
    weights = batch["weights"][:, 1:]
    trained = weights > 0
    logits = head(hidden[:, :-1][trained]).float()
    losses = torch.nn.functional.cross_entropy(logits, batch["input_ids"][:, 1:][trained], reduction="none")
    return (losses * weights[trained]).sum() / trained.sum().clamp(min=1)


def length_buckets(examples: list, batch_size: int, rng: random.Random) -> list[list]:
    """Examples (anything with `input_ids`) grouped by length, so a batch holds little padding, the
    groups in shuffled order."""
    order = sorted(range(len(examples)), key=lambda i: (len(examples[i].input_ids), rng.random()))
    groups = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(groups)
    return [[examples[i] for i in group] for group in groups]


def batches(
    examples: list[Encoded], batch_size: int, pad_id: int, max_length: int, rng: random.Random
) -> list[dict[str, torch.Tensor]]:
    """Length-bucketed batches (similar lengths together, so little padding), in shuffled order."""
    out = []
    for rows in length_buckets(examples, batch_size, rng):
        width = min(max_length, max(len(r.input_ids) for r in rows))
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        weights = torch.zeros((len(rows), width))
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for row, example in enumerate(rows):
            n = min(width, len(example.input_ids))
            ids[row, :n] = torch.tensor(example.input_ids[:n])
            weights[row, :n] = torch.tensor(example.weights[:n])
            mask[row, :n] = 1
        out.append({"input_ids": ids, "attention_mask": mask, "weights": weights})
    return out
