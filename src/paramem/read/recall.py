"""Answer yes/no questions by recall: the memory writes down what it holds on each learned
conversation, asked with nothing but the conversation's date (the cue it was trained on,
`augment.pairs.recall_question`), and a question is answered yes when it is close in meaning to a
sentence it recalled (cosine similarity of all-MiniLM-L6-v2 embeddings).

Why: a 0.5B model reads its own first answer token poorly on near-miss questions, even with the
conversations pasted in its prompt (docs/figures.md). Writing back what it was
trained to write, then matching, asks of it only what it learned. What is recalled comes from the
adapter's weights and the conversations' dates alone; the raw conversations are not kept, and the
teacher's notes are read only to place the threshold (their held-out questions, `readers.ask`).
"""

from __future__ import annotations

import json
import re
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
from transformers import PreTrainedTokenizerBase

from paramem.augment.pairs import recall_opening, recall_question
from paramem.config import RECALL_THRESHOLD, RecallConfig
from paramem.data.notes import Notes
from paramem.errors import InputError, user_file_problem
from paramem.files import write_atomic
from paramem.model.embeddings import load_embedder
from paramem.model.prompts import encode_prompt
from paramem.store.user import UserMemory, VersionGone

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")  # a sentence end, or a new line (a new recall branch)


@dataclass(frozen=True)
class Cue:
    """What recalls one conversation: the trained question and the content-free start of its answer."""

    question: str  # "What did we talk about on 2 March 2026?"
    opening: str  # "On 2 March 2026 we talked about"


def sentences(texts: list[str]) -> list[str]:
    """The distinct non-empty sentences of some texts, in order."""
    out: list[str] = []
    for text in texts:
        for sentence in _SENTENCE_END.split(text.strip()):
            sentence = sentence.strip()
            if sentence and sentence not in out:
                out.append(sentence)
    return out


def _left_padded(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left padding, so every row's continuation starts at the same position."""
    width = max(map(len, rows))
    ids = torch.tensor([[pad_id] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    return ids, mask


@contextmanager
def _in_float32(model):
    """The model in float32 for a while: CPU decoding is ~1.8x faster than in bf16 (measured on the
    0.5B preset), and every parameter gets its own dtype back after (the LoRA weights stay float32)."""
    dtypes = {name: p.dtype for name, p in model.named_parameters()}
    model.float()
    try:
        yield model
    finally:
        for name, p in model.named_parameters():
            p.data = p.data.to(dtypes[name])


def recollect(
    model, tokenizer: PreTrainedTokenizerBase, cues: list[Cue], config: RecallConfig | None = None
) -> list[str]:
    """What the model recalls for each cue: asked exactly as trained (`encode_prompt`), its answer
    begun with the cue's opening, then one greedy continuation from each of the `branches` likeliest
    next tokens; the branches joined by newlines."""
    config = config or RecallConfig()
    # Only the decoding runs in inference mode: weights cast in it would become inference tensors,
    # which a model that learns on after recalling (remember, with the text dropped) cannot train.
    with torch.no_grad(), _in_float32(model):
        return _branch_and_continue(model, tokenizer, cues, config)


@torch.inference_mode()
def _branch_and_continue(model, tokenizer: PreTrainedTokenizerBase, cues: list[Cue], config: RecallConfig) -> list[str]:
    pad = tokenizer.pad_token_id
    prompts = [
        encode_prompt(tokenizer, c.question) + tokenizer(c.opening, add_special_tokens=False)["input_ids"] for c in cues
    ]
    starts = []
    for i in range(0, len(prompts), config.batch_size):
        ids, mask = _left_padded(prompts[i : i + config.batch_size], pad)
        next_logits = model(input_ids=ids, attention_mask=mask).logits[:, -1].float()
        starts += next_logits.topk(config.branches, dim=-1).indices.tolist()
    rows = [(cue, prompt + [token]) for cue, (prompt, tops) in enumerate(zip(prompts, starts)) for token in tops]
    texts: list[list[str]] = [[] for _ in cues]
    for i in range(0, len(rows), config.batch_size):
        batch = rows[i : i + config.batch_size]
        ids, mask = _left_padded([r for _, r in batch], pad)
        generated = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=config.max_new_tokens,
            do_sample=False,
            no_repeat_ngram_size=config.no_repeat_ngram_size,
            pad_token_id=pad,
        )
        for (cue, _), out in zip(batch, generated):
            continuation = tokenizer.decode(out[ids.shape[1] - 1 :], skip_special_tokens=True)
            texts[cue].append(f"{cues[cue].opening}{continuation}".strip())
    return ["\n".join(branches) for branches in texts]


class SentenceMatcher:
    """Scores questions by their best cosine similarity to a set of sentences, minus the threshold
    (so a score above 0 means "recalled")."""

    def __init__(self, texts: list[str], threshold: float = RECALL_THRESHOLD, embedder=None):
        self.sentences = sentences(texts)
        self.threshold = threshold
        self.embedder = embedder or load_embedder()
        self._embeddings = (
            self.embedder.encode(self.sentences, convert_to_tensor=True, normalize_embeddings=True)
            if self.sentences
            else None
        )

    def matches(self, questions: list[str]) -> list[tuple[float, str | None]]:
        """(score, the closest sentence) per question."""
        if not questions:
            return []
        if self._embeddings is None:  # nothing recalled: nothing is close
            return [(-self.threshold, None)] * len(questions)
        asked = self.embedder.encode(questions, convert_to_tensor=True, normalize_embeddings=True)
        best = (asked @ self._embeddings.T).max(dim=-1)
        return [
            (value - self.threshold, self.sentences[index])
            for value, index in zip(best.values.tolist(), best.indices.tolist())
        ]

    def scores(self, questions: list[str]) -> list[float]:
        return [score for score, _ in self.matches(questions)]


def recall_cues(notes: list[Notes]) -> list[Cue]:
    """One cue per learned conversation; only its date (or id) is read from the notes."""
    bare = [Notes(n.conversation_id, n.date, [], [], []) for n in notes]
    return [Cue(recall_question(n), recall_opening(n)) for n in bare]


def recollections(
    model, tokenizer: PreTrainedTokenizerBase, memory: UserMemory, config: RecallConfig | None = None
) -> list[str]:
    """What the user's adapter (loaded in `model`) recalls of each learned conversation, cached beside
    that adapter version (`recall.json`): a new version (another conversation learned) starts afresh.
    The version is the one `load_memory` loaded, even if a newer one was committed since."""
    config = config or RecallConfig()
    cues = recall_cues(memory.notes())
    try:
        with memory.reading(memory.loaded_version or memory.current_version()) as folder:
            texts = _cached(folder / "recall.json", cues, config)
            if texts is None:
                texts = recollect(model, tokenizer, cues, config)
                write_atomic(
                    folder / "recall.json", json.dumps({**_key(cues, config), "recollections": texts}, indent=1)
                )
            return texts
    except VersionGone:  # replaced while we read it: answer from this model, cache nothing
        return recollect(model, tokenizer, cues, config)


def cached_recollections(memory: UserMemory, config: RecallConfig | None = None) -> list[str] | None:
    """What the current version recalls, if it was computed already (None if not): no model needed."""
    config = config or RecallConfig()
    cues = recall_cues(memory.notes())
    try:
        with memory.reading(memory.current_version()) as folder:
            return _cached(folder / "recall.json", cues, config)
    except VersionGone:
        return None


def _key(cues: list[Cue], config: RecallConfig) -> dict:
    """What a cached recollection was computed from; any change computes it again."""
    return {"cues": [asdict(c) for c in cues], "config": asdict(config)}


def _cached(path, cues: list[Cue], config: RecallConfig) -> list[str] | None:
    if not path.exists():
        return None
    key = _key(cues, config)
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        return saved["recollections"] if {k: saved.get(k) for k in key} == key else None
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise InputError(f"{user_file_problem(error)}; delete it and paramem recalls again", path=path) from None
