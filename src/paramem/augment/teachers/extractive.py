"""The extractive teacher: no model; key phrases, the user's own sentences as facts, near misses
from a topic bank."""

from __future__ import annotations

import random
import re

from paramem.augment.teachers.base import human_date
from paramem.augment.templates import FALLBACK_TOPIC_WORDINGS
from paramem.data.conversations import Conversation
from paramem.data.notes import Fact, Notes, Topic, content_words, is_absent

# Everyday topics a person might discuss with an assistant: the pool of near misses for the
# extractive teacher, and of fallback negatives for the others.
TOPIC_BANK = [
    "a trip to Spain",
    "learning the guitar",
    "baking sourdough bread",
    "a job interview",
    "training for a marathon",
    "buying a used car",
    "adopting a cat",
    "planting tomatoes",
    "a wedding speech",
    "learning Spanish",
    "a broken laptop",
    "moving to a new flat",
    "a birthday party",
    "a hiking trip in the Alps",
    "a chess tournament",
    "a dentist appointment",
    "knitting a scarf",
    "a leaking roof",
    "starting a podcast",
    "a camping weekend",
    "learning to swim",
    "a vegetarian diet",
    "a photography course",
    "renovating a kitchen",
    "a ski holiday",
    "a book club",
    "a new puppy",
    "a tax return",
    "a yoga class",
    "a concert ticket",
    "a cycling tour",
    "writing a novel",
    "a family reunion",
    "a science fair project",
    "a flu vaccine",
    "a fishing trip",
    "a pottery class",
    "a broken phone screen",
    "a salary negotiation",
    "a road trip to Scotland",
    "a piano recital",
    "a garden pond",
    "a sleep problem",
    "a coffee machine",
    "a volunteer project",
    "a climbing gym",
    "a wine tasting",
    "a history exam",
    "a surprise party",
    "an allergy to peanuts",
    "a visit to Paris",
    "a football match",
    "a bird watching trip",
    "a new mattress",
    "a video game",
    "a car accident",
    "a mortgage application",
    "a charity run",
    "a beach holiday in Greece",
    "a sewing machine",
]


# Everyday facts about a person, worded as the extractive teacher words the user's own sentences:
# its false facts, so that fact-shaped questions are trained with "no" answers too. Without them
# every long "did we talk about the fact that ..." question a memory saw was a "yes", and it learned
# to say yes to all of them (LoCoMo, README).
FACT_BANK = [
    "The user adopted a rescue greyhound last spring.",
    "The user is training for a triathlon in Nice.",
    "The user's sister is getting married in Lisbon in June.",
    "The user sold the user's old motorbike.",
    "The user is learning to play the cello with a private teacher.",
    "The user broke the user's wrist skiing.",
    "The user started a night course in accounting.",
    "The user's landlord raised the rent by ten percent.",
    "The user is allergic to cats and sneezes around them.",
    "The user moved to Rotterdam for a new job.",
    "The user volunteers at an animal shelter on Saturdays.",
    "The user's grandmother turned ninety this year.",
    "The user is saving money for a sailing boat.",
    "The user lost the user's passport at the airport.",
    "The user runs a small bakery with a friend.",
    "The user failed the driving test twice.",
    "The user is writing a fantasy novel about dragons.",
    "The user's daughter started primary school.",
    "The user grows chillies on the windowsill.",
    "The user switched to a night shift at the hospital.",
    "The user plays bass guitar in a jazz band.",
    "The user is planning a road trip across Canada.",
    "The user's car was stolen last month.",
    "The user collects vintage vinyl records.",
    "The user is recovering from knee surgery.",
    "The user teaches maths at a secondary school.",
    "The user is renovating an old farmhouse.",
    "The user won a local chess tournament.",
    "The user keeps bees in the back garden.",
    "The user's brother lives in Melbourne.",
    "The user is afraid of flying and takes trains instead.",
    "The user bought a 3D printer.",
    "The user is fostering two kittens.",
    "The user took up rock climbing at an indoor gym.",
    "The user's flat flooded after a pipe burst.",
    "The user is studying Japanese for a trip to Osaka.",
    "The user quit smoking three months ago.",
    "The user coaches a youth football team.",
    "The user inherited a piano from an aunt.",
    "The user is organising a school reunion.",
]


# A sentence ends at . ! ? and a space, or at the full-width and Arabic marks, which need no space.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[\u3002\uff01\uff1f\u061f\u06d4])\s*")
QUESTION_MARKS = ("?", "\uff1f", "\u061f")  # ASCII, full-width, Arabic


def fallback_paraphrases(phrase: str) -> list[str]:
    """Other wordings of a topic phrase made without a model: without its article, then the
    templates.FALLBACK_TOPIC_WORDINGS forms."""
    bare = re.sub(r"^(a|an|the)\s+", "", phrase)
    head = bare.split()[-1]
    made = [bare, *(form.format(bare=bare, head=head) for form in FALLBACK_TOPIC_WORDINGS)]
    return [p for p in dict.fromkeys(made) if p != phrase]


class ExtractiveTeacher:
    """Deterministic and fast, no model: the fallback when no model may be used.

    Topics are the most repeated content phrases; facts are the user's own sentences with the
    pronouns turned into "the user"; negatives come from TOPIC_BANK and false facts from FACT_BANK,
    each checked absent from the conversation.
    """

    name = "extractive"

    def __init__(self, topics: int = 6, facts: int = 6, negatives: int = 8):
        self.n_topics, self.n_facts, self.n_negatives = topics, facts, negatives

    def notes(self, conversation: Conversation) -> Notes:
        words = content_words(conversation.text)
        topics = [self._topic(phrase) for phrase in self._key_phrases(conversation)[: self.n_topics]]
        facts = [Fact(f, [second_person(f)]) for f in self._facts(conversation)[: self.n_facts]]
        rng = random.Random(conversation.content_hash)
        pool = [t for t in TOPIC_BANK if is_absent(t, words)]
        negatives = [self._topic(p) for p in rng.sample(pool, min(self.n_negatives, len(pool)))]
        fact_pool = [f for f in FACT_BANK if is_absent(f, words)]
        false_facts = [Fact(f, [second_person(f)]) for f in rng.sample(fact_pool, min(len(facts), len(fact_pool)))]
        return Notes(conversation.id, human_date(conversation.timestamp), topics, facts, negatives, false_facts)

    @staticmethod
    def _topic(phrase: str) -> Topic:
        return Topic(phrase, fallback_paraphrases(phrase))

    @staticmethod
    def _key_phrases(conversation: Conversation) -> list[str]:
        counts: dict[str, float] = {}
        for message in conversation.messages:
            # Runs of content words, split at stopwords and punctuation.
            for chunk in re.split(r"[^\w' -]+", message.content):
                run: list[str] = []
                for token in chunk.split() + [""]:
                    if token and content_words(token):
                        run.append(token.strip("'"))
                        continue
                    if run:
                        phrase = " ".join(run[-3:]).lower()
                        counts[phrase] = counts.get(phrase, 0) + len(run[-3:]) * (1.5 if message.role == "user" else 1)
                    run = []
        ranked = sorted(counts, key=lambda p: -counts[p])
        chosen: list[str] = []
        for phrase in ranked:
            if not any(content_words(phrase) <= content_words(c) for c in chosen):
                chosen.append(phrase)
        return chosen

    @staticmethod
    def _facts(conversation: Conversation) -> list[str]:
        facts = []
        for message in conversation.messages:
            if message.role != "user":
                continue
            for sentence in _SENTENCE_END.split(message.content):
                sentence = sentence.strip()
                if sentence.endswith(QUESTION_MARKS) or len(content_words(sentence)) < 3:
                    continue
                facts.append(_third_person(sentence))
        return sorted(facts, key=lambda f: -len(content_words(f)))


_PRONOUNS = [
    (r"\bI'm\b", "the user is"),
    (r"\bI've\b", "the user has"),
    (r"\bI'll\b", "the user will"),
    (r"\bI'd\b", "the user would"),
    (r"\bI am\b", "the user is"),
    (r"\bI\b", "the user"),
    (r"\bmy\b", "the user's"),
    (r"\bMy\b", "the user's"),
    (r"\bme\b", "the user"),
    (r"\bmine\b", "the user's"),
]


def second_person(fact: str) -> str:
    """ "The user's cat ..." -> "Your cat ...": a second wording of an extracted fact."""
    for old, new in (
        ("The user's", "Your"),
        ("the user's", "your"),
        ("The user is", "You are"),
        ("the user is", "you are"),
        ("The user has", "You have"),
        ("the user has", "you have"),
        ("The user", "You"),
        ("the user", "you"),
    ):
        fact = fact.replace(old, new)
    return fact


def _third_person(sentence: str) -> str:
    for pattern, replacement in _PRONOUNS:
        sentence = re.sub(pattern, replacement, sentence)
    sentence = sentence.rstrip(".!") + "."
    return sentence[:1].upper() + sentence[1:]
