"""Answer from memory: calibrated yes/no from one forward pass, generation for everything else."""

from __future__ import annotations

import re
import statistics
from collections.abc import Callable
from dataclasses import dataclass

import torch
from peft import PeftModel
from safetensors import SafetensorError
from transformers import PreTrainedTokenizerBase

from paramem.augment.pairs import QAPair
from paramem.config import REPLY_REPETITION_PENALTY
from paramem.memory.cartridge import INDEX, CartridgeModel, reads_cartridges
from paramem.model.decode import KV_COPY_BUDGET, decode_after_prefix, end_token_ids, repeated, rows_that_fit
from paramem.model.loading import decoder_and_head, load_model
from paramem.model.prompts import SYSTEM_PROMPT, encode_prompt
from paramem.store.user import UserMemory

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


def fit_threshold(scores: list[float], labels: list[str]) -> float:
    """The log-odds threshold with the best balanced accuracy on labelled held-out questions.

    Ties go to the threshold nearest 0, so a memory that separates nothing keeps P(yes) > P(no)."""
    yes = [s for s, label in zip(scores, labels) if label == "yes"]
    no = [s for s, label in zip(scores, labels) if label == "no"]
    if not yes or not no:
        return 0.0
    ordered = sorted(set(scores))
    candidates = [ordered[0] - 1.0, *[(a + b) / 2 for a, b in zip(ordered, ordered[1:])], ordered[-1] + 1.0]

    def balanced_accuracy(t: float) -> float:
        return (sum(s > t for s in yes) / len(yes) + sum(s <= t for s in no) / len(no)) / 2

    return max(candidates, key=lambda t: (balanced_accuracy(t), -abs(t)))


def rule_thresholds(score: Callable[[list[str]], list[float]], heldout: list[QAPair] | None = None) -> dict[str, float]:
    """The score threshold of each decision rule (evaluate/run.py: DECISION_RULES) for one way of
    scoring questions. `heldout` (the teacher's held-out reworded pairs) adds the heldout rule (a
    fitted threshold) and the balanced rule (their median score: they are half yes by construction)."""
    thresholds = {"prior": score([CONTENT_FREE_QUESTION])[0], "raw": 0.0}
    if heldout is not None:
        scores = score([p.question for p in heldout])
        thresholds["heldout"] = fit_threshold(scores, [p.label for p in heldout])
        thresholds["balanced"] = statistics.median(scores) if scores else 0.0
    return thresholds


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


def load_memory(user: str, home=None, dtype: str | None = None):
    """(model with the user's adapter or cartridges, tokenizer, UserMemory); `InputError` for an unknown user or a
    damaged adapter. The base model loads in `dtype`, else $PARAMEM_DTYPE, else the dtype the memory
    was learned in. The adapter version read is kept on disk while it loads (`UserMemory.reading`)."""
    memory = UserMemory(user, home).require()
    settings = memory.settings()
    base, tokenizer = load_model(settings["base_model"], dtype, settings.get("dtype"))
    cartridges = settings.get("form") == "cartridge"
    with memory.reading() as adapter:
        try:
            if cartridges:
                model = CartridgeModel.from_pretrained(base, tokenizer, adapter)
            else:
                model = PeftModel.from_pretrained(base, str(adapter))
        except (OSError, ValueError, RuntimeError, KeyError, SafetensorError) as error:
            raise memory.damaged(adapter / (INDEX if cartridges else "adapter_model.safetensors"), error) from None
        memory.loaded_version = int(adapter.name)
    model.eval()
    return model, tokenizer, memory
