"""What every teacher is: `Teacher.notes(conversation)`, and what they share."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from paramem.data.conversations import Conversation
from paramem.data.notes import Fact, Notes, Topic, content_words, is_absent

# Bump when a prompt or parser changes: cached notes from an older version are not reused.
PROMPT_VERSION = "6"


class Teacher(Protocol):
    name: str  # identifies the teacher and its settings in the cache key

    def notes(self, conversation: Conversation) -> Notes: ...


def human_date(timestamp: str | None) -> str | None:
    """ "2026-03-02T09:14:00Z" -> "2 March 2026"."""
    if not timestamp:
        return None
    try:
        moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return f"{moment.day} {moment.strftime('%B %Y')}"


def drop_contradicting_negatives(notes: list[Notes], texts: list[str]) -> list[Notes]:
    """A "no" must be true of the whole memory: drop negative wordings that occur in any of `texts`
    (the conversations being learned) or resemble a positive wording of any notes (earlier ones too)."""
    words = content_words(" ".join(texts))
    positives = [w for n in notes for item in (*n.topics, *n.facts) for w in item.wordings]

    def still_false(items: list, kind: type) -> list:
        kept = []
        for item in items:
            wordings = [w for w in item.wordings if is_absent(w, words) and not overlaps(w, positives)]
            if wordings:
                kept.append(kind(wordings[0], wordings[1:]))
        return kept

    for n in notes:
        n.negatives = still_false(n.negatives, Topic)
        n.false_facts = still_false(n.false_facts, Fact)
    return notes


def overlaps(phrase: str, others: list[str], share: float = 0.5) -> bool:
    """True when at least `share` of the phrase's content words are in one of `others`."""
    words = content_words(phrase)
    return any(words and len(words & content_words(o)) / len(words) >= share for o in others)
