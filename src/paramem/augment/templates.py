"""Question and statement templates. Training draws from TRAIN_*; validation uses HELDOUT_* only, so
validation accuracy measures whether a memory answers questions worded in ways it never saw."""

from __future__ import annotations

import re

# Closed (yes/no) questions about a topic. `{t}` is a topic wording.
TRAIN_TOPIC_QUESTIONS = [
    "Did we discuss {t}?",
    "Have we talked about {t}?",
    "Did {t} come up in our conversations?",
    "Did I ever mention {t} to you?",
    "Do you remember us talking about {t}?",
    "Was {t} something we chatted about?",
    "Have I told you about {t}?",
    "Did our conversation touch on {t}?",
    "Did we ever talk about {t}?",
    "Is {t} something I brought up with you?",
    "Did you and I discuss {t}?",
    "Have we ever covered {t}?",
    "Did I bring up {t} at some point?",
    "Did we have a chat about {t}?",
    "Was {t} a topic between us?",
    "Did the subject of {t} come up?",
    "Do you recall me mentioning {t}?",
    "Have we spoken about {t} before?",
    "Did we go over {t}?",
    "Was there a conversation about {t}?",
    "Did I talk to you about {t}?",
    "Have we had a conversation about {t}?",
    "Did {t} feature in one of our chats?",
    "Did we exchange a few words about {t}?",
]
HELDOUT_TOPIC_QUESTIONS = [
    "Did we talk about {t}?",
    "Have you and I ever discussed {t}?",
    "Did I mention {t} to you before?",
    "Was {t} discussed between us?",
    "Do you remember a chat about {t}?",
]

# Closed questions about a fact. `{f}` is a fact wording, lower-cased first letter, no final period.
TRAIN_FACT_QUESTIONS = [
    "Is it true that {f}?",
    "Did I tell you that {f}?",
    "Do you remember that {f}?",
    "Is it right that {f}?",
    "Did you learn from me that {f}?",
    "Am I correct that {f}?",
]
HELDOUT_FACT_QUESTIONS = [
    "Did I say that {f}?",
    "Is it correct that {f}?",
]

# Wordings a teacher falls back to when it has no paraphrase of its own (`teachers.fallback_wordings`).
# A held-out question never uses one while another wording exists: a local teacher paraphrases the
# topics it found but falls back on the negatives it drew, so these forms would tell "no" from "yes".
FALLBACK_TOPIC_WORDINGS = ("the topic of {bare}", "anything about {head}")


def is_fallback_wording(wording: str) -> bool:
    """Whether a wording is one of the FALLBACK_TOPIC_WORDINGS forms (its words are the form's)."""
    return any(wording.startswith(form.split("{")[0]) for form in FALLBACK_TOPIC_WORDINGS)


# Open questions; the answer restates the content.
OPEN_TOPIC_QUESTIONS = [
    "What did we say about {t}?",
    "What do you remember about {t}?",
    "What did I tell you about {t}?",
    "Tell me what we discussed about {t}.",
]
OPEN_DATE_QUESTIONS = [
    "What did we talk about on {d}?",
    "What was our conversation on {d} about?",
    "Which topics did we cover on {d}?",
]

# Statements about a conversation, in both directions (topic -> date and date -> topic).
STATEMENTS = [
    "On {d} we talked about {t}.",
    "{T} is something we discussed on {d}.",
    "We discussed {t}.",
    "{T} came up in one of our conversations.",
]

YES_ANSWERS = ["Yes, we talked about {t}.", "Yes, {t} came up.", "Yes, you told me about {t}."]
NO_ANSWERS = ["No, we never talked about {t}.", "No, {t} never came up.", "No, you never told me about {t}."]
YES_FACT_ANSWERS = ["Yes. {F}", "Yes, that's right. {F}"]
NO_FACT_ANSWERS = ["No, you never told me that.", "No, that is not something we discussed."]


# A sentence-initial article or pronoun, lowered when a stated fact becomes a clause; names keep their capital
_LOWER_STARTS = {"The", "A", "An", "Her", "His", "Their", "She", "He", "They", "It", "This", "There"}


def fact_clause(fact: str) -> str:
    """A stated fact as the clause of a question ("Did we talk about the fact that {clause}?"): no
    final full stop, "The support group ..." -> "the support group ...", names kept."""
    fact = fact.strip().rstrip(".")
    first, _, rest = fact.partition(" ")
    return f"{first.lower()} {rest}" if first in _LOWER_STARTS else fact


# The openings of every answer and statement above: an answer in words that starts with one is the
# memory reciting its training, not answering (issue 38 measures how often that happens).
_TEMPLATE_OPENING = re.compile(
    r"^\s*(yes[,.]|no[,.]|(on [^,.]{3,40} )?we (talked about|discussed)\b|once we talked about\b"
    r"|.{0,80}\b(came up( in one of our conversations)?|is something we discussed)\b)",
    re.IGNORECASE,
)


def in_training_template(answer: str) -> bool:
    """Whether an answer in words opens as the memory's training answers and statements do."""
    return bool(_TEMPLATE_OPENING.match(answer))
