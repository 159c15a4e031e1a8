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
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import replace

from paramem.augment.pairs import recall_opening
from paramem.augment.teachers.base import overlaps
from paramem.augment.teachers.extractive import FACT_BANK, TOPIC_BANK, fallback_paraphrases, second_person
from paramem.data.notes import Fact, Notes, Topic, content_words, is_absent

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_LIST_SEPARATOR = re.compile(r",\s*|\s+and\s+")


def _ranked(counts: Counter, limit: int) -> list[str]:
    """The `limit` most frequent items, ties in order of first appearance (Counter keeps it)."""
    return [item for item, _ in sorted(counts.items(), key=lambda kv: -kv[1])[:limit]]


def notes_from_recollection(
    learned: Notes, recollection: str, topics: int = 6, facts: int = 6, negatives: int = 8
) -> Notes:
    """The notes `recollection` (the memory's recall branches for one conversation, one per line)
    amounts to: the topics listed after the recall opening, the sentences after them as facts (those
    recalled by the most branches first), and near misses absent from everything recalled. Only the
    id and the date are read from `learned`."""
    opening = recall_opening(learned)
    topic_counts: Counter = Counter()
    fact_counts: Counter = Counter()
    for branch in recollection.splitlines():
        branch = branch.strip()
        if not branch:
            continue
        head, *rest = _SENTENCE_END.split(branch.removeprefix(opening).strip())
        if branch.startswith(opening):  # the first sentence lists the topics
            topic_counts.update(
                t for t in (p.strip(" .") for p in _LIST_SEPARATOR.split(head.rstrip("."))) if content_words(t)
            )
        else:  # a branch that does not start as trained: every sentence may be a fact
            rest = [head, *rest]
        fact_counts.update(s.strip() for s in rest if len(content_words(s)) >= 3)
    recalled = content_words(recollection)
    rng = random.Random(learned.conversation_id)
    topic_pool = [t for t in TOPIC_BANK if is_absent(t, recalled)]
    fact_pool = [f for f in FACT_BANK if is_absent(f, recalled)]
    kept_facts = _ranked(fact_counts, facts)
    return Notes(
        conversation_id=learned.conversation_id,
        date=learned.date,
        topics=[Topic(t, fallback_paraphrases(t)) for t in _ranked(topic_counts, topics)],
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
