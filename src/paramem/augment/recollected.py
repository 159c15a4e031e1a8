"""Notes the memory writes itself: what is kept of a conversation once its text is dropped.

The teacher's notes hold the user's own words (the extractive teacher's facts are their sentences in
the third person), so with `--keep-text until-consolidated` or `never` they must not outlive the
text. Replay and forgetting still need notes to learn from, so once a conversation is consolidated
its notes are replaced by what the memory recalls of it, asked with nothing but the conversation's
date (`read.recall.recollect`), parsed back into the notes' shape. The recall answer it was trained
on is `pairs.summary`: "On <date> we talked about A, B and C. Fact. Fact." Replay then rehearses
what the weights already hold and nothing more (generative replay); what the memory did not recall
is not rehearsed again. Near misses come from the extractive teacher's fixed banks, checked absent
from what was recalled, so they carry nothing of the conversation either.

A 0.5B memory also recalls what it was never taught: other conversations' topics under this date,
stutters ("terracotta terracotta pots") and inventions ("The user's new puppy is a golden
retriever."). Rehearsing those blurs every later replay (session 30: the memory alone fell to chance
ranking), so what is kept is checked, while the teacher's notes are still there, against them: an
item stays only when its content words are mostly ones the teacher's notes hold, and once.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import replace

from paramem.augment.pairs import recall_opening
from paramem.augment.teachers.base import overlaps
from paramem.augment.teachers.extractive import FACT_BANK, TOPIC_BANK, fallback_paraphrases, second_person
from paramem.augment.templates import is_fallback_wording
from paramem.data.notes import Fact, Notes, Topic, content_words, is_absent

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_LIST_SEPARATOR = re.compile(r",\s*|\s+and\s+")
# A word or a phrase of up to four said again at once: "terracotta terracotta pots".
_STUTTER = re.compile(r"\b(\w+(?:\s+\w+){0,3})(?:\s+\1\b)+", re.IGNORECASE)
# Share of an item's content words that the teacher's notes must hold for the memory's recollection
# of it to be kept: the complement of `is_absent`'s third, fixed before any run.
SUPPORTED = 2 / 3
# An item with this share of its content words in one kept already repeats it ("The user's pot has
# no drainage holes at all." after "The user's pot has no drainage holes.").
REPEATED = 0.8


def _kept(counts: Counter, taught: set[str], limit: int) -> list[str]:
    """Up to `limit` items, the most recalled first (ties in order of first appearance: the sort is
    stable), that the teacher's notes support and that do not repeat one kept before them."""
    kept: list[str] = []
    for item in sorted(counts, key=lambda item: -counts[item]):
        words = content_words(item)
        if len(words & taught) < SUPPORTED * len(words) or overlaps(item, kept, REPEATED):
            continue
        kept.append(item)
        if len(kept) == limit:
            break
    return kept


def notes_from_recollection(
    learned: Notes, recollection: str, topics: int = 6, facts: int = 6, negatives: int = 8
) -> Notes:
    """The notes `recollection` (the memory's recall branches for one conversation, one per line)
    amounts to: the topics listed after the recall opening and the sentences after them as facts
    (those recalled by the most branches first), each kept only when `learned`, the teacher's notes
    it replaces, supports it; and near misses absent from both. Nothing else of `learned` is kept."""
    opening = recall_opening(learned)
    topic_counts: Counter = Counter()
    fact_counts: Counter = Counter()
    for branch in recollection.splitlines():
        branch = branch.strip()
        if not branch:
            continue
        head, *rest = _SENTENCE_END.split(_STUTTER.sub(r"\1", branch.removeprefix(opening).strip()))
        if branch.startswith(opening):  # the first sentence lists the topics
            topic_counts.update(
                t for t in (p.strip(" .") for p in _LIST_SEPARATOR.split(head.rstrip("."))) if content_words(t)
            )
        else:  # a branch that does not start as trained: every sentence may be a fact
            rest = [head, *rest]
        fact_counts.update(s.strip() for s in rest if len(content_words(s)) >= 3)
    # The fallback forms' own words ("the topic of ...") are the templates', not the conversation's.
    wordings = [w for item in (*learned.topics, *learned.facts) for w in item.wordings if not is_fallback_wording(w)]
    taught = set().union(*map(content_words, wordings))
    # A near miss must be absent from what the memory was taught too, or it could deny a true fact.
    known = content_words(recollection) | taught
    rng = random.Random(learned.conversation_id)
    topic_pool = [t for t in TOPIC_BANK if is_absent(t, known)]
    fact_pool = [f for f in FACT_BANK if is_absent(f, known)]
    kept_facts = _kept(fact_counts, taught, facts)
    return Notes(
        conversation_id=learned.conversation_id,
        date=learned.date,
        topics=[Topic(t, fallback_paraphrases(t)) for t in _kept(topic_counts, taught, topics)],
        facts=[Fact(f, [second_person(f)]) for f in kept_facts],
        negatives=[Topic(t, fallback_paraphrases(t)) for t in rng.sample(topic_pool, min(negatives, len(topic_pool)))],
        false_facts=[Fact(f, [second_person(f)]) for f in rng.sample(fact_pool, min(len(kept_facts), len(fact_pool)))],
        written_by="memory",
    )


def without_what_resembles(kept: Notes, gone: Notes) -> Notes:
    """A kept conversation's notes, for relearning after `gone` is forgotten: when the memory wrote
    them, without the topics and facts that resemble the forgotten conversation's (half their
    content words or more), since a memory recalls one conversation's facts under another's date
    too. The teacher's notes come from their own conversation's text and are kept whole."""
    if kept.written_by != "memory":
        return kept
    forgotten = [w for item in (*gone.topics, *gone.facts) for w in item.wordings]
    return replace(
        kept,
        topics=[t for t in kept.topics if not any(overlaps(w, forgotten) for w in t.wordings)],
        facts=[f for f in kept.facts if not any(overlaps(w, forgotten) for w in f.wordings)],
    )
