"""What a teacher writes about one conversation: topics, atomic facts, and near-miss negatives.

Notes are what replay and forgetting learn a conversation again from, so they are plain
JSON-serialisable dataclasses. Once a conversation's text is dropped (`--keep-text
until-consolidated` or `never`), the memory itself writes them in the teacher's place
(`augment.recollected`).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

_WORD = re.compile(r"[^\W_]+")  # a run of letters and digits, in any script
# Scripts written without spaces between words (Chinese, Japanese, Thai, Lao, Khmer, Myanmar): a run
# of them is one "word" to _WORD, so it is cut into overlapping character pairs instead, which match
# across wordings the way words do (the registry's segmenters cover one language each, or are unkept).
_UNSPACED = re.compile("[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff]+")
# Words that say nothing about what was discussed; ignored when checking whether a topic is absent.
STOPWORDS = frozenset(
    """
a an the and or but if of to in on at for with about from by as into over under up down out is are was
were be been being am do does did doing have has had having i me my mine we us our you your yours he him
his she her they them their it its this that these those there here what which who whom when where why
how not no yes so than too very can could will would should may might must just also some any all each
more most much many few other such own same again then once s t don doesn didn isn wasn aren weren ve ll
re d m really quite lot lots thing things something anything stuff get got getting go going went make
made one two new good great nice well like know think want need let talk talked discuss discussed
""".split()
)


def content_words(text: str) -> set[str]:
    """Case-folded words of `text` that carry content (no English stopwords, no words under 3
    letters, English plurals crudely singularised), in any script; text without spaces gives its
    character pairs."""
    words = set()
    for token in _WORD.findall(text.casefold()):
        for run in _UNSPACED.findall(token):
            words.update(run[i : i + 2] for i in range(max(len(run) - 1, 1)))
        for word in _UNSPACED.split(token):
            if word in STOPWORDS or len(word) < 3:
                continue
            english_plural = word.isascii() and word.endswith("s") and len(word) > 4
            words.add(word[:-1] if english_plural else word)
    return words


def is_absent(phrase: str, conversation_words: set[str], max_overlap: float = 0.34) -> bool:
    """True when at most a third of the phrase's content words occur in the conversation."""
    words = content_words(phrase)
    if not words:
        return False
    return len(words & conversation_words) / len(words) <= max_overlap


@dataclass
class Topic:
    name: str  # how a person would name it: "a trip to Kyoto"
    paraphrases: list[str] = field(default_factory=list)  # other wordings: "travelling to Japan"

    @property
    def wordings(self) -> list[str]:
        return [self.name, *[p for p in self.paraphrases if p != self.name]]


@dataclass
class Fact:
    statement: str  # atomic, naming its subject: "The user is flying to Kyoto in April."
    paraphrases: list[str] = field(default_factory=list)

    @property
    def wordings(self) -> list[str]:
        return [self.statement, *[p for p in self.paraphrases if p != self.statement]]


@dataclass
class Notes:
    """A teacher's notes on one conversation."""

    conversation_id: str
    date: str | None  # human-readable date of the conversation, when known
    topics: list[Topic]
    facts: list[Fact]
    negatives: list[Topic]  # near-miss topics checked absent from the conversation
    false_facts: list[Fact] = field(default_factory=list)  # plausible facts that are not true here
    written_by: str = "teacher"  # or "memory": what the memory recalled, once the text was dropped

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Notes:
        return cls(
            conversation_id=data["conversation_id"],
            date=data.get("date"),
            topics=[Topic(**t) for t in data["topics"]],
            facts=[Fact(**f) for f in data["facts"]],
            negatives=[Topic(**t) for t in data["negatives"]],
            false_facts=[Fact(**f) for f in data.get("false_facts", [])],
            written_by=data.get("written_by", "teacher"),
        )
