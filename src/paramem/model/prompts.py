"""How a question/answer pair becomes tokens and loss weights; shared by training and answering.

The model's own chat template is rendered around two sentinels, then split there, so each token
is known to belong to the template (weight 1), the question or the answer (weight lambda). The
answering code calls the same `encode_prompt`, so what is asked at answer time is byte for byte what
was trained.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from transformers import PreTrainedTokenizerBase

# Short on purpose: every training step pays for these tokens.
SYSTEM_PROMPT = "You remember your past conversations with this user."
_QUESTION, _ANSWER = "\u2063QUESTION\u2063", "\u2063ANSWER\u2063"


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    weights: list[float]  # per-token loss weight for predicting this token (0 = not trained)


@lru_cache(maxsize=16)
def _template_parts(tokenizer: PreTrainedTokenizerBase, system: str) -> tuple[str, str, str]:
    """(before question, between question and answer, after answer) of the chat template."""
    messages = [
        {"role": "system", "content": system},
        {"role": "user", "content": _QUESTION},
        {"role": "assistant", "content": _ANSWER},
    ]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    before, rest = text.split(_QUESTION)
    middle, after = rest.split(_ANSWER)
    return before, middle, after.rstrip("\n")


def _ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []


def encode_prompt(
    tokenizer: PreTrainedTokenizerBase, question: str, system: str = SYSTEM_PROMPT, slot: bool = False
) -> list[int]:
    """Token ids of the prompt up to where the answer starts (the chat template's, token for token).

    `slot`: a system prompt that goes on after SYSTEM_PROMPT (retrieved passages) is tokenized apart
    from it, so that the prompt starts with exactly the memory head's tokens and a cartridge memory can
    sit between (cartridge.py). Some tokenizers merge across that point: Qwen2.5's ".\n\n" is one token."""
    before, middle, _ = _template_parts(tokenizer, system)
    cut = before.index(SYSTEM_PROMPT) + len(SYSTEM_PROMPT) if slot and SYSTEM_PROMPT in before else len(before)
    first = _ids(tokenizer, before[:cut]) + _ids(tokenizer, before[cut:])
    return first + _ids(tokenizer, question) + _ids(tokenizer, middle)


def encode_example(
    tokenizer: PreTrainedTokenizerBase,
    question: str,
    answer: str,
    qa_weight: float,
    template_weight: float = 1.0,
    system: str = SYSTEM_PROMPT,
) -> Encoded:
    """Token ids and PLUM loss weights: `qa_weight` on question and answer tokens, `template_weight`
    on the instruction and chat-template tokens (including the end-of-answer marker)."""
    before, middle, after = _template_parts(tokenizer, system)
    pieces = [
        (before, template_weight),
        (question, qa_weight),
        (middle, template_weight),
        (answer, qa_weight),
        (after, template_weight),
    ]
    ids: list[int] = []
    weights: list[float] = []
    for text, weight in pieces:
        piece = _ids(tokenizer, text)
        ids += piece
        weights += [weight] * len(piece)
    return Encoded(ids, weights)


def encode_statement(tokenizer: PreTrainedTokenizerBase, text: str, weight: float) -> Encoded:
    """A bare statement about a conversation (plain language modelling, no template)."""
    ids = _ids(tokenizer, text)
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return Encoded(ids, [weight] * len(ids))


def reads_cartridges(model) -> bool:
    """Whether `model` is a cartridge memory with its cartridges on: its prompts must then start with
    exactly the memory head's tokens (`encode_prompt(..., slot=True)`)."""
    return bool(getattr(model, "active", False))
