"""Answer from memory: calibrated yes/no from one forward pass, generation for everything else."""

from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerBase

from paramem.model.decode import KV_COPY_BUDGET, decode_after_prefix, end_token_ids, rows_that_fit
from paramem.model.prompts import encode_prompt, reads_cartridges
from paramem.model.scoring import common_prefix_length


@torch.inference_mode()
def answer_many(
    model, tokenizer: PreTrainedTokenizerBase, questions: list[str], systems: list[str], max_new_tokens: int = 48
) -> list[str]:
    """A greedy answer to each question under its system prompt, as `model.generate` gives it alone.
    The start every prompt shares (the chat template and system prompt; for the `context` method,
    thousands of pasted tokens) is read once, and the questions are decoded in batches after it
    (decode.py), as many rows at a time as `KV_COPY_BUDGET` holds copies of that start."""
    if not questions:
        return []
    cartridges = reads_cartridges(model)
    prompts = [encode_prompt(tokenizer, q, s, cartridges) for q, s in zip(questions, systems)]
    shared = common_prefix_length(prompts) - 1  # every row keeps at least one token of its own
    if cartridges and shared <= len(model.head):  # the composed cartridges alone: they are a cache already
        shared, prefix = len(model.head), model.prefix_cache(1)
    elif shared > 0:
        prefix = model(input_ids=torch.tensor([prompts[0][:shared]]), use_cache=True, logits_to_keep=1).past_key_values
    else:
        prefix = None
    rows = rows_that_fit(prefix, KV_COPY_BUDGET)
    end_ids, pad = end_token_ids(tokenizer), tokenizer.pad_token_id or 0
    replies = []
    for start in range(0, len(prompts), rows):
        rests = [p[shared:] for p in prompts[start : start + rows]]
        for row in decode_after_prefix(model, prefix, shared, rests, max_new_tokens, end_ids, pad):
            replies.append(tokenizer.decode(row.ids, skip_special_tokens=True).strip())
    return replies
