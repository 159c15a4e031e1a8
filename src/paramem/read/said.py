"""Questions asking whether something was said ("Did we talk about my rescue cat?", "Do you remember
that I own a Jeep?"), asked of the passages instead: "Do the excerpts mention the user's rescue cat?".

Why: the base model reading a user's passages ("user: ...", "assistant: ...") does not link the
asker's "I" and "my" to the user's lines, and asked whether *we* discussed something it says no with
the answer in front of it. Asked whether the excerpts mention it, in the excerpts' own words, it ranks
the same questions far better (benchmarks/first_person.py, development sets: AUC 0.84 against 0.63 on
MSC, 0.88 against 0.76 on the demo). Its "no" is then plain: log P(yes) < log P(no), a threshold of 0
(a content-free "Do the excerpts mention that?" says yes to any passages, so it cannot be the zero).
In the first person ("Did I tell you ...", "my rescue cat") the answer path reads the reworded
question against the user's own turns (respond.py): asked of every turn, the assistant's own facts
were said yes to (0.86 of them on MSC development episodes; 0.42 against the user's turns).

A claim about someone named ("Did we talk about the fact that Caroline adopted a dog?") keeps the
shipped reading: asked of the excerpts it was said yes to whenever its topic came up, the false
variants LoCoMo's probes plant included (development samples 0-3: no-accuracy 0.07 against 0.77).
"""

from __future__ import annotations

import re

from lemminflect import getAllLemmas, getInflection

# A question asking whether something was said, and what it asks about.
SAID_FRAME = re.compile(
    r"^(?:(?:did|have)\s+(?:we|i)\s+(?:ever\s+)?(?:talk|talked|discuss|discussed|speak|spoken|spoke|chat|chatted"
    r"|mention|mentioned|practi[sc]e|practi[sc]ed)|(?:did|have)\s+i\s+(?:ever\s+)?(?:tell|told|ask|asked)\s+you"
    r"|do\s+you\s+remember)\s+(?:about\s+)?(?P<that>that\s+)?(?P<what>.+?)"
    r"(?:\s+(?:to|with)\s+you)?(?:\s+together)?\?$",
    re.IGNORECASE,
)
FIRST_PERSON = re.compile(r"\b(?:I|my|me|mine|myself)\b")
CLAIM = re.compile(r"(?:the\s+fact\s+)?that\b", re.IGNORECASE)
# The asker's words for themselves, as the excerpts name them.
THE_USER = (
    (r"\bI'm\b|\bI am\b", "the user is"),
    (r"\bI've\b|\bI have\b", "the user has"),
    (r"\b(?:my|our|mine)\b", "the user's"),
    (r"\b(?:I|me|myself|we|us)\b", "the user"),
)
# The asker as the subject, the words up to its verb ("I really love", "we adopted").
# Not one of two ("my wife and I like"): theirs is a plural verb.
SUBJECT = re.compile(
    r"(?<!\band )\b(?:I|we)((?:\s+[a-z]+ly|\s+(?:also|still|never|always|often|even|just|too))*)\s+([a-z]+)\b(?!')"
)
MODALS = frozenset({"can", "could", "will", "would", "shall", "should", "may", "might", "must"})


def third_person(verb: str) -> str:
    """A verb's base form as the user's ("own": "owns", "watch": "watches"); any other word (a past
    tense, a modal, not a verb) as it is."""
    if verb in MODALS or verb not in getAllLemmas(verb).get("VERB", ()):
        return verb
    return getInflection(verb, "VBZ")[0]


def _the_users(what: str, agree: bool) -> str:
    """`what` with the asker named as the excerpts name them: "I own a Jeep" as "the user owns a Jeep"
    (as "the user own a Jeep" unless `agree`, as before session 35)."""
    if agree:
        what = SUBJECT.sub(lambda m: f"I{m[1]} {third_person(m[2])}", what)
        what = re.sub(r"\b(?:I|we) don't\b", "I doesn't", what)
    for pattern, words in THE_USER:
        what = re.sub(pattern, words, what)
    return what


def excerpt_question(question: str, agree: bool = True) -> str | None:
    """ "Did we talk about my rescue cat?" as "Do the excerpts mention the user's rescue cat?"; None
    for a question that does not ask whether something was said. `agree`: the user's verbs agree
    ("the user owns"; benchmarks/first_person.py reads the rules before session 35 without)."""
    match = SAID_FRAME.match(question.strip())
    if match is None:
        return None
    return f"Do the excerpts mention {'that ' if match['that'] else ''}{_the_users(match['what'], agree)}?"


def asked_of_the_excerpts(question: str, agree: bool = True) -> str | None:
    """What the answer path asks the passages instead of `question`: its `excerpt_question`, except
    for a claim about someone else ("... that Caroline adopted a dog?"), which is read as asked (None)."""
    match = SAID_FRAME.match(question.strip())
    if match is None:
        return None
    claim = match["that"] or CLAIM.match(match["what"])
    if claim and not FIRST_PERSON.search(match["what"]):
        return None
    return excerpt_question(question, agree)
