"""Batched decoding of prompts that share their start.

The teacher answers hundreds of questions after the same conversation, and the `context` method
answers every open question after the same pasted sessions. On a CPU a decoding step costs less
for sixteen rows than sixteen steps for one (the weights are read once either way), and the shared
start is the bulk of each prompt: so it is read once, its keys and values are copied into every row,
and the rows decode together. The saving shrinks as the shared start grows, since each row attends
over its own copy (docs/experiments.md, "Open questions in batches").

Each row is its prompt's own tokens, left-padded up to the longest; the padding is masked and the
row's positions follow straight on from the shared start, so a row reads exactly as its prompt alone
would (tests/test_decode.py), up to float rounding: in bf16 a sum taken in another order can turn a
greedy answer into another word.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedTokenizerBase

BATCH = 16  # rows decoded together
# Bytes the rows' copies of the shared start may take: with the 0.5B model a token's keys and values
# take 24 KB, so sixteen copies of six LoCoMo sessions (~5k tokens) take 2 GB, of all 29 (~25k) 10 GB.
KV_COPY_BUDGET = 2 * 2**30


@dataclass
class Decoded:
    """One row's continuation, with its top-k next-token log-probabilities at every step."""

    ids: list[int] = field(default_factory=list)
    top_ids: list[list[int]] = field(default_factory=list)
    top_logprobs: list[list[float]] = field(default_factory=list)


def repeated(cache, rows: int):
    """A copy of a one-row key/value cache for `rows` rows (the original is left for the next batch)."""
    cache = copy.deepcopy(cache)
    cache.batch_repeat_interleave(rows)
    return cache


def rows_that_fit(prefix_cache, budget: int, most: int = BATCH) -> int:
    """How many rows can each hold a copy of `prefix_cache` within `budget` bytes (at least one)."""
    if prefix_cache is None:
        return most
    size = sum(t.nbytes for layer in prefix_cache.layers for t in (layer.keys, layer.values))
    return max(1, min(most, budget // max(size, 1)))


def end_token_ids(tokenizer: PreTrainedTokenizerBase) -> set[int]:
    """Tokens that end an answer: the tokenizer's end of text, and the chat template's end of turn."""
    end = (tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>"))
    return {i for i in end if i is not None and i != tokenizer.unk_token_id}


def left_padded(read: int, rests: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input ids, attention mask, position ids) of rows that continue `read` shared tokens: each row
    left-padded to the longest, the padding masked, its positions following on from the shared ones."""
    width = max(map(len, rests))
    ids = torch.tensor([[pad_id] * (width - len(r)) + r for r in rests])
    mask = torch.tensor([[1] * read + [0] * (width - len(r)) + [1] * len(r) for r in rests])
    positions = torch.tensor([[read] * (width - len(r)) + list(range(read, read + len(r))) for r in rests])
    return ids, mask, positions


@torch.inference_mode()
def decode_after_prefix(
    model: torch.nn.Module,
    prefix_cache,
    read: int,
    rests: list[list[int]],
    max_tokens: int,
    end_ids: set[int],
    pad_id: int,
    top_k: int = 1,
    sampler: torch.Generator | None = None,
) -> list[Decoded]:
    """Continue each prompt `prefix + rest` for up to `max_tokens` tokens, greedily (or sampled at
    temperature 1 with `sampler`), all rows in one batch. `prefix_cache` holds the keys and values of
    the `read` shared tokens (None when `read` is 0); every rest has at least one token. A row stops
    at the first of `end_ids`, which it keeps."""
    rows = len(rests)
    ids, mask, positions = left_padded(read, rests, pad_id)
    cache = repeated(prefix_cache, rows) if prefix_cache is not None else None
    out = model(
        input_ids=ids,
        attention_mask=mask,
        position_ids=positions,
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=1,  # the next token's only: a batch's logits over every prompt token run to gigabytes
    )
    decoded = [Decoded() for _ in rests]
    done = [False] * rows
    for _ in range(max_tokens):
        logprobs = out.logits[:, -1].float().log_softmax(-1)
        top = logprobs.topk(top_k)
        if sampler is None:
            tokens = top.indices[:, 0].tolist()
        else:  # row by row: the draws the teacher has made since it was batched (benchmarks/teacher_batch.py)
            tokens = [int(torch.multinomial(row.exp(), 1, generator=sampler)) for row in logprobs]
        for row, token in enumerate(tokens):
            if not done[row]:  # a finished row goes on decoding in the batch; what it adds is dropped
                decoded[row].ids.append(token)
                decoded[row].top_ids.append(top.indices[row].tolist())
                decoded[row].top_logprobs.append([round(v, 5) for v in top.values[row].tolist()])
                done[row] = token in end_ids
        if all(done):
            break
        mask = torch.cat([mask, torch.ones(rows, 1, dtype=mask.dtype)], dim=1)
        positions = positions[:, -1:] + 1
        out = model(
            input_ids=torch.tensor(tokens)[:, None],
            attention_mask=mask,
            position_ids=positions,
            past_key_values=out.past_key_values,
            use_cache=True,
            logits_to_keep=1,
        )
    return decoded
