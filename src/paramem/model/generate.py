"""Greedy chat generation from any model (a memory loaded in it or not)."""

from __future__ import annotations

import torch
from transformers import PreTrainedTokenizerBase

from paramem.config import REPLY_REPETITION_PENALTY
from paramem.model.prompts import SYSTEM_PROMPT


@torch.inference_mode()
def generate(
    model,
    tokenizer: PreTrainedTokenizerBase,
    messages: list[dict[str, str]],
    max_new_tokens: int = 128,
    system: str = SYSTEM_PROMPT,
) -> str:
    """A greedy reply to a chat (list of {role, content}); the memory's system prompt comes first."""
    chat = [{"role": "system", "content": system}, *messages]
    inputs = tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    output = model.generate(
        **inputs,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        repetition_penalty=REPLY_REPETITION_PENALTY,
        pad_token_id=tokenizer.pad_token_id,
    )
    return tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()
