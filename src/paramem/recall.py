"""Answer yes/no questions by recall: the memory writes down what it holds on each learned
conversation, asked with nothing but the conversation's date (the cue it was trained on,
`augment.pairs.recall_question`), and a question is answered yes when it is close in meaning to a
sentence it recalled (cosine similarity of all-MiniLM-L6-v2 embeddings).

Why: a 0.5B model reads its own first answer token poorly on near-miss questions, even with the
conversations pasted in its prompt (README, "Measured on the demo set"). Writing back what it was
trained to write, then matching, asks of it only what it learned. Nothing but the adapter's weights
and the conversations' dates goes in; the raw conversations and the teacher's notes are not read.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from paramem.answer import CONTENT_FREE_QUESTION, fit_threshold
from paramem.augment.notes import Notes
from paramem.augment.pairs import recall_question, validation_pairs
from paramem.embeddings import load_embedder
from paramem.prompts import encode_prompt
from paramem.store import UserMemory

# The cosine similarity above which a question counts as recalled. Chosen on LoCoMo's probes
# matched against LoCoMo's own conversation text (benchmarks/recall_threshold.py), never on the
# demo set, so the demo figures do not tune it.
RECALL_THRESHOLD = 0.40
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass
class RecallConfig:
    max_new_tokens: int = 160  # the longest recollection of one conversation, in tokens
    threshold: float = RECALL_THRESHOLD  # similarity above which a question counts as recalled
    batch_size: int = 8  # recollections generated side by side
    # Greedy decoding of a small model falls into loops ("cafe, cafe, cafe, ..."); no phrase of this
    # many tokens may repeat. Long, because the prompt counts too: the cue's date (~8 tokens) must
    # be free to come back at the start of the answer.
    no_repeat_ngram_size: int = 12


def sentences(texts: list[str]) -> list[str]:
    """The distinct non-empty sentences of some texts, in order."""
    out: list[str] = []
    for text in texts:
        for sentence in _SENTENCE_END.split(text.strip()):
            sentence = sentence.strip()
            if sentence and sentence not in out:
                out.append(sentence)
    return out


@torch.inference_mode()
def recollect(model, tokenizer: PreTrainedTokenizerBase, cues: list[str],
              config: RecallConfig | None = None) -> list[str]:
    """The model's greedy answer to each cue, asked exactly as it was trained (`encode_prompt`)."""
    config = config or RecallConfig()
    out = []
    for start in range(0, len(cues), config.batch_size):
        prompts = [encode_prompt(tokenizer, cue) for cue in cues[start:start + config.batch_size]]
        width = max(map(len, prompts))
        # Left padding, so every row's answer starts at the same position.
        ids = torch.tensor([[tokenizer.pad_token_id] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        generated = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=config.max_new_tokens,
                                   do_sample=False, no_repeat_ngram_size=config.no_repeat_ngram_size,
                                   pad_token_id=tokenizer.pad_token_id)
        out += [tokenizer.decode(row[width:], skip_special_tokens=True).strip() for row in generated]
    return out


class SentenceMatcher:
    """Scores questions by their best cosine similarity to a set of sentences, minus the threshold
    (so a score above 0 means "recalled")."""

    def __init__(self, texts: list[str], threshold: float = RECALL_THRESHOLD, embedder=None):
        self.sentences = sentences(texts)
        self.threshold = threshold
        self.embedder = embedder or load_embedder()
        self._embeddings = (self.embedder.encode(self.sentences, convert_to_tensor=True, normalize_embeddings=True)
                            if self.sentences else None)

    def matches(self, questions: list[str]) -> list[tuple[float, str | None]]:
        """(score, the closest sentence) per question."""
        if not questions:
            return []
        if self._embeddings is None:  # nothing recalled: nothing is close
            return [(-self.threshold, None)] * len(questions)
        asked = self.embedder.encode(questions, convert_to_tensor=True, normalize_embeddings=True)
        best = (asked @ self._embeddings.T).max(dim=-1)
        return [(value - self.threshold, self.sentences[index])
                for value, index in zip(best.values.tolist(), best.indices.tolist())]

    def scores(self, questions: list[str]) -> list[float]:
        return [score for score, _ in self.matches(questions)]


def recall_cues(notes: list[Notes]) -> list[str]:
    """One cue per learned conversation; only its date (or id) is read from the notes."""
    return [recall_question(Notes(n.conversation_id, n.date, [], [], [])) for n in notes]


def recollections(model, tokenizer: PreTrainedTokenizerBase, memory: UserMemory,
                  config: RecallConfig | None = None) -> list[str]:
    """What the user's adapter (loaded in `model`) recalls of each learned conversation, cached beside
    that adapter version: a new version (another conversation learned) starts a fresh cache."""
    cues = recall_cues(memory.notes())
    cache = memory.current_adapter() / "recall.json"
    if cache.exists():
        saved = json.loads(cache.read_text(encoding="utf-8"))
        if saved.get("cues") == cues:
            return saved["recollections"]
    texts = recollect(model, tokenizer, cues, config)
    tmp = cache.with_name(f".recall.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"cues": cues, "recollections": texts}, indent=1), encoding="utf-8")
    os.replace(tmp, cache)  # atomic: a reader never sees half a file
    return texts


class RecallAnswerer:
    """Yes/no answers to questions put to one user's memory, read by recall."""

    def __init__(self, model, tokenizer: PreTrainedTokenizerBase, memory: UserMemory,
                 config: RecallConfig | None = None):
        config = config or RecallConfig()
        self.memory = memory
        self.matcher = SentenceMatcher(recollections(model, tokenizer, memory, config), config.threshold)

    def threshold(self, rule: str) -> float:
        """The score threshold of a decision rule (the rules of evaluate/run.py)."""
        if rule == "raw":
            return 0.0
        if rule == "prior":
            return self.matcher.scores([CONTENT_FREE_QUESTION])[0]
        if rule == "heldout":
            pairs = [p for n in self.memory.notes() for p in validation_pairs(n)]
            return fit_threshold(self.matcher.scores([p.question for p in pairs]), [p.label for p in pairs])
        raise ValueError(f"unknown decision rule {rule!r} (prior, heldout, raw)")

    def decide(self, questions: list[str], rule: str = "heldout") -> list[tuple[str, float, str | None]]:
        """("yes" | "no", score minus the rule's threshold, the closest recalled sentence) per question."""
        threshold = self.threshold(rule)
        return [("yes" if score > threshold else "no", score - threshold, sentence)
                for score, sentence in self.matcher.matches(questions)]
