"""Yes/no scoring: log P(yes) - log P(no) of the first answer token, read off the decoder, and the
`Reader` protocol every readout follows."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from transformers import PreTrainedTokenizerBase

from paramem.model.decode import repeated
from paramem.model.loading import decoder_and_head
from paramem.model.prompts import SYSTEM_PROMPT, encode_prompt, reads_cartridges

# A question with no content: its yes/no log-odds are the model's prior, subtracted when calibrating.
CONTENT_FREE_QUESTION = "Did we discuss that?"


_YES_NO_START = re.compile(
    r"^\s*(did|do|does|have|has|had|is|are|was|were|am|can|could|will|would|should)\b", re.IGNORECASE
)


def is_yes_no_question(question: str) -> bool:
    return bool(_YES_NO_START.match(question)) and question.rstrip().endswith("?")


def first_token_ids(tokenizer: PreTrainedTokenizerBase, words: list[str]) -> list[int]:
    """First-token ids of each spelling ("Yes", " yes", ...), deduplicated."""
    ids = []
    for word in words:
        for text in (word, " " + word):
            token_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            if token_ids and token_ids[0] not in ids:
                ids.append(token_ids[0])
    return ids


def common_prefix_length(sequences: list[list[int]]) -> int:
    length = min(map(len, sequences))
    for i in range(length):
        if any(seq[i] != sequences[0][i] for seq in sequences):
            return i
    return length


@torch.inference_mode()
def last_hidden_states(
    decoder: torch.nn.Module, prompts: list[list[int]], pad_id: int, batch_size: int = 16
) -> torch.Tensor:
    """The decoder's final hidden state at the last token of each prompt, in float32, [n, hidden].

    The prompts' common start (a shared system prompt, pasted context, few-shot examples) is computed
    once and its keys and values reused by every batch; the rest runs in right-padded batches."""
    shared = common_prefix_length(prompts) - 1  # keep at least one token per prompt to predict from
    prefix_cache = None
    if shared > 0:
        prefix_cache = decoder(input_ids=torch.tensor([prompts[0][:shared]]), use_cache=True).past_key_values
    out = []
    for start in range(0, len(prompts), batch_size):
        rest = [p[shared:] for p in prompts[start : start + batch_size]]
        width = max(map(len, rest))
        ids = torch.tensor([r + [pad_id] * (width - len(r)) for r in rest])
        mask = torch.tensor([[1] * shared + [1] * len(r) + [0] * (width - len(r)) for r in rest])
        positions = torch.arange(shared, shared + width).expand(len(rest), -1)
        cache = repeated(prefix_cache, len(rest)) if prefix_cache is not None else None
        hidden = decoder(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=cache is not None,
        ).last_hidden_state
        out.append(hidden[torch.arange(len(rest)), torch.tensor([len(r) - 1 for r in rest])].float())
    return torch.cat(out)


def head_rows(model: torch.nn.Module, token_ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight rows, biases) of the vocabulary head for some tokens, in float32."""
    _, head = decoder_and_head(model)
    bias = head.bias if getattr(head, "bias", None) is not None else torch.zeros(head.weight.shape[0])
    return head.weight[token_ids].detach().float(), bias[token_ids].detach().float()


@dataclass
class YesNoScorer:
    """log P(yes) - log P(no) of the first answer token."""

    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase
    system: str = SYSTEM_PROMPT
    batch_size: int = 16

    def __post_init__(self):
        self.yes_ids = first_token_ids(self.tokenizer, ["Yes", "yes"])
        self.no_ids = first_token_ids(self.tokenizer, ["No", "no"])
        if set(self.yes_ids) & set(self.no_ids):  # the byte-level test tokenizer shares first bytes
            self.yes_ids, self.no_ids = self.yes_ids[:1], [i for i in self.no_ids if i not in self.yes_ids][:1]
        self._prior: float | None = None
        # The decoder stack without its output layer (LoRA layers inside still apply): the full
        # vocabulary head is skipped, and CPU bf16 matmuls with few rows are very slow anyway.
        self._decoder, _ = decoder_and_head(self.model)
        self._yes_weight, self._yes_bias = head_rows(self.model, self.yes_ids)
        self._no_weight, self._no_bias = head_rows(self.model, self.no_ids)

    def prompts(self, questions: list[str], systems: list[str] | None = None) -> list[list[int]]:
        """Each question's prompt as the scorer reads it (split at the memory's slot for cartridges)."""
        systems = systems or [self.system] * len(questions)
        slot = reads_cartridges(self.model)
        return [encode_prompt(self.tokenizer, q, s, slot) for q, s in zip(questions, systems)]

    @torch.inference_mode()
    def log_odds(self, questions: list[str], systems: list[str] | None = None) -> list[float]:
        """log P(yes) - log P(no) per question; `systems` gives each question its own system prompt."""
        if not questions:
            return []
        prompts = self.prompts(questions, systems)
        last = last_hidden_states(self._decoder, prompts, self.tokenizer.pad_token_id, self.batch_size)
        # Only the yes and no logits, in float32: bf16 logits move in steps of 0.125 at this
        # size, too coarse to calibrate; the softmax normaliser cancels in log P(yes) - log P(no).
        yes = (last @ self._yes_weight.T + self._yes_bias).logsumexp(-1)
        no = (last @ self._no_weight.T + self._no_bias).logsumexp(-1)
        return (yes - no).tolist()

    def prior(self) -> float:
        if self._prior is None:
            self._prior = self.log_odds([CONTENT_FREE_QUESTION])[0]
        return self._prior

    def decide(self, questions: list[str], threshold: float | None = None) -> list[tuple[str, float]]:
        """("yes" | "no", log-odds minus the threshold) for each question; the threshold defaults to
        the prior (the log-odds of a content-free question)."""
        offset = self.prior() if threshold is None else threshold
        return [("yes" if s - offset > 0 else "no", s - offset) for s in self.log_odds(questions)]


class Reader(Protocol):
    def score(self, questions: list[str]) -> list[float]:
        """One score per question; above a rule's threshold means yes."""
        ...

    def prompt_tokens(self, questions: list[str]) -> int:
        """Mean prompt tokens the model reads per question (0 when no prompt is run per question)."""
        ...


class LogOddsReader:
    """log P(yes) - log P(no) of the first answer token; `systems` gives each question its system
    prompt (pasted conversations, retrieved passages), else paramem's own."""

    def __init__(
        self, model, tokenizer: PreTrainedTokenizerBase, systems: Callable[[list[str]], list[str]] | None = None
    ):
        self.model, self.tokenizer = model, tokenizer
        self.scorer = YesNoScorer(model, tokenizer)
        self.systems = systems or (lambda questions: [self.scorer.system] * len(questions))

    def score(self, questions: list[str]) -> list[float]:
        return self.scorer.log_odds(questions, self.systems(questions))

    def prompt_tokens(self, questions: list[str]) -> int:
        """Mean prompt tokens per question, a memory read in the prompt (cartridges) included:
        attention reads every one of them."""
        lengths = [len(prompt) for prompt in self.scorer.prompts(questions, self.systems(questions))]
        return sum(lengths) // max(len(lengths), 1) + getattr(self.model, "prefix_tokens", 0)
