"""Teachers turn a conversation into `Notes`: topics, atomic facts, paraphrases and near misses.

Three real teachers share one interface, `Teacher.notes(conversation)`:
  extractive  no model: key phrases, the user's own sentences as facts, near misses from a topic bank
  local       any Hugging Face model, prompted few-shot (the larger preset included)
  openai      any OpenAI-compatible endpoint (vLLM, llama.cpp server, Ollama), concurrent, with retries
Negatives from every teacher are checked absent from the conversation before they are used.
"""

from __future__ import annotations

import json
import os
import random
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Protocol

from paramem.augment.templates import FALLBACK_TOPIC_WORDINGS
from paramem.data.conversations import Conversation
from paramem.data.notes import Fact, Notes, Topic, content_words, is_absent
from paramem.errors import InputError, user_file_problem
from paramem.files import write_atomic
from paramem.model.loading import load_model

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
        facts = [Fact(f, [_second_person(f)]) for f in self._facts(conversation)[: self.n_facts]]
        rng = random.Random(conversation.content_hash)
        pool = [t for t in TOPIC_BANK if is_absent(t, words)]
        negatives = [self._topic(p) for p in rng.sample(pool, min(self.n_negatives, len(pool)))]
        fact_pool = [f for f in FACT_BANK if is_absent(f, words)]
        false_facts = [Fact(f, [_second_person(f)]) for f in rng.sample(fact_pool, min(len(facts), len(fact_pool)))]
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


def _second_person(fact: str) -> str:
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


# ---------------------------------------------------------------------------------------------
# Model teachers: small focused few-shot prompts, one item at a time ("per fact, not per document":
# a small teacher follows a short prompt, and every topic gets its paraphrases and near misses).

TEACHER_SYSTEM = "You write short, precise notes about conversations. Answer with a list, one item per line."
EXAMPLE_MESSAGE = "I'm flying to Kyoto in April and want to see the cherry blossoms."

# (instruction, example input, example answer) for each kind of request.
TOPICS_PROMPT = (
    "List the topics of this message as short noun phrases, one per line.",
    EXAMPLE_MESSAGE,
    "- a trip to Kyoto\n- cherry blossoms",
)
FACTS_PROMPT = (
    "List the facts about the user in this message, one short sentence each, each starting with 'The user'.",
    EXAMPLE_MESSAGE,
    "- The user is flying to Kyoto in April.\n- The user wants to see the cherry blossoms.",
)
PARAPHRASE_PROMPT = (
    "Give 3 other ways to say this topic.",
    "learning to play the piano",
    "- piano lessons\n- practising the piano\n- studying music on the piano",
)
NEAR_MISS_PROMPT = (
    "Name 3 topics that are similar to this one but clearly different.",
    "learning to play the piano",
    "- learning to play the violin\n- singing lessons\n- learning to paint",
)
_EXAMPLE_WORDS = content_words(
    " ".join(" ".join(p[1:]) for p in (TOPICS_PROMPT, FACTS_PROMPT, PARAPHRASE_PROMPT, NEAR_MISS_PROMPT))
)


def few_shot(prompt: tuple[str, str, str], text: str) -> list[dict[str, str]]:
    instruction, example, answer = prompt
    return [
        {"role": "system", "content": TEACHER_SYSTEM},
        {"role": "user", "content": f"{instruction}\n\n{example}"},
        {"role": "assistant", "content": answer},
        {"role": "user", "content": f"{instruction}\n\n{text}"},
    ]


def list_items(
    text: str, limit: int, exclude: set[str] = frozenset(), allowed_words: set[str] | None = None, max_words: int = 12
) -> list[str]:
    """The distinct items of a model's list, cleaned; small teachers repeat themselves and copy the
    few-shot example, so repeats, excluded items and copied example words are dropped."""
    items: list[str] = []
    seen = {e.lower() for e in exclude}
    for line in text.splitlines():
        item = re.sub(r"^\s*(?:[-*\u2022]|\d+[.)])\s*", "", line).strip().strip('"').rstrip(".")
        if not item or len(item.split()) > max_words or item.lower() in seen:
            continue
        leaked = content_words(item) & _EXAMPLE_WORDS
        if allowed_words is not None and leaked - allowed_words:
            continue
        seen.add(item.lower())
        items.append(item)
        if len(items) == limit:
            break
    return items


def _overlaps(phrase: str, others: list[str], share: float = 0.5) -> bool:
    """True when at least `share` of the phrase's content words are in one of `others`."""
    words = content_words(phrase)
    return any(words and len(words & content_words(o)) / len(words) >= share for o in others)


def model_notes(complete, conversation: Conversation, topics: int = 6, max_chars: int = 2000) -> Notes:
    """Notes from any `complete(messages) -> str`, asked one user message and one topic at a time:
    topics grounded in the conversation, 3 paraphrases and near misses for each (near misses checked
    absent from the conversation and unlike every positive wording), facts; gaps filled extractively."""
    words = content_words(conversation.text)
    backup = ExtractiveTeacher().notes(conversation)
    # Ask about each user message on its own: a small teacher summarising a whole conversation
    # names only its last lines.
    messages = [m.content[:max_chars] for m in conversation.messages if m.role == "user" and content_words(m.content)]
    names, fact_texts = [], []
    for message in messages:
        for name in list_items(complete(few_shot(TOPICS_PROMPT, message)), 3, set(names), allowed_words=words):
            if content_words(name) & words and not _overlaps(name, names, 0.99):
                names.append(name)
        fact_texts += [
            f
            for f in list_items(
                complete(few_shot(FACTS_PROMPT, message)), 4, set(fact_texts), allowed_words=words, max_words=30
            )
            if f.lower().startswith("the user") and len(content_words(f) & words) >= 2
        ]
    names = names[:topics]
    chosen_topics = []
    for name in names:
        paraphrases = list_items(complete(few_shot(PARAPHRASE_PROMPT, name)), 3, {name}, words | content_words(name))
        chosen_topics.append(Topic(name, paraphrases))
    chosen_topics = chosen_topics or backup.topics
    positives = [w for t in chosen_topics for w in t.wordings]
    negatives = []
    for topic in chosen_topics:
        near = [
            n
            for n in list_items(
                complete(few_shot(NEAR_MISS_PROMPT, topic.name)), 3, set(positives), words | content_words(topic.name)
            )
            if is_absent(n, words) and not _overlaps(n, positives)
        ]
        if near:
            negatives.append(Topic(near[0], near[1:]))
    facts = [Fact(f, [_second_person(f)]) for f in fact_texts]
    # Too few facts from the model: add the user's own sentences.
    facts += [f for f in backup.facts if not _overlaps(f.statement, [g.statement for g in facts], 0.7)][
        : max(0, 3 - len(facts))
    ]
    # At least one negative per topic keeps 1:1 balance possible; the topic bank tops them up.
    taken = {n.name.lower() for n in negatives}
    negatives += [n for n in backup.negatives if n.name.lower() not in taken][
        : max(0, len(chosen_topics) - len(negatives))
    ]
    return Notes(conversation.id, human_date(conversation.timestamp), chosen_topics, facts, negatives)


class LocalTeacher:
    """Any Hugging Face causal LM (a preset name, folder, id or GGUF), prompted few-shot as in PLUM."""

    def __init__(self, model: str = "qwen2.5-0.5b", max_new_tokens: int = 80):
        self.model_name = model
        self.name = f"local:{model}"
        self.max_new_tokens = max_new_tokens
        self._loaded = None

    def complete(self, messages: list[dict[str, str]]) -> str:
        import torch

        if self._loaded is None:
            self._loaded = load_model(self.model_name)
        model, tokenizer = self._loaded
        prompt = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        with torch.inference_mode():
            output = model.generate(
                **prompt,
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                repetition_penalty=1.1,
                pad_token_id=tokenizer.pad_token_id,
            )
        return tokenizer.decode(output[0, prompt["input_ids"].shape[1] :], skip_special_tokens=True)

    def notes(self, conversation: Conversation) -> Notes:
        return model_notes(self.complete, conversation)


class TeacherError(InputError):
    """The teacher endpoint refused a request or stayed unreachable: one line, and the notes already
    written stay cached."""


def retry_after(header: str | None, default: float, cap: float = 60.0) -> float:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date), else `default`; at most `cap`."""
    if not header:
        return min(default, cap)
    try:
        seconds = float(header)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(header).timestamp() - time.time()
        except (TypeError, ValueError):
            return min(default, cap)
    return min(max(seconds, 0.0), cap)


@dataclass
class OpenAITeacher:
    """An OpenAI-compatible chat endpoint (`--teacher-url`), called with bounded concurrency.

    The API key is read from the environment (`api_key_env`, default OPENAI_API_KEY), never from a
    command-line flag, which any user of the machine can read in `ps`."""

    url: str  # base URL, e.g. http://localhost:8000/v1
    model: str = "default"
    api_key_env: str = "OPENAI_API_KEY"  # the environment variable holding the key (unset: no key sent)
    concurrency: int = 4  # conversations in flight at once
    retries: int = 3  # further tries after a server error, a rate limit or a timeout
    timeout_s: float = 120.0
    backoff_s: float = 1.0  # first wait between tries, doubled each time (a Retry-After header wins)

    @property
    def name(self) -> str:
        return f"openai:{self.url}:{self.model}"

    def complete(self, messages: list[dict[str, str]]) -> str:
        import httpx

        key = os.environ.get(self.api_key_env, "").strip()
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        body = {"model": self.model, "messages": messages, "temperature": 0.0, "max_tokens": 300}
        endpoint = self.url.rstrip("/") + "/chat/completions"
        last_error = ""
        for attempt in range(self.retries + 1):
            wait = self.backoff_s * 2**attempt
            try:
                response = httpx.post(endpoint, json=body, headers=headers, timeout=self.timeout_s)
            except httpx.TransportError as error:
                last_error = f"{type(error).__name__}: {error}"
            else:
                if response.status_code == 429 or response.status_code >= 500:
                    last_error = f"HTTP {response.status_code}"
                    wait = retry_after(response.headers.get("retry-after"), wait)
                elif response.status_code >= 400:  # a request error: trying again cannot help
                    detail = " ".join(response.text.split())[:200]
                    hint = f" (is {self.api_key_env} set?)" if response.status_code in (401, 403) else ""
                    raise TeacherError(
                        f"teacher endpoint {endpoint} answered HTTP {response.status_code}{hint}: {detail}"
                    )
                else:
                    try:
                        return response.json()["choices"][0]["message"]["content"]
                    except (ValueError, KeyError, IndexError, TypeError):
                        last_error = "a reply that is not a chat completion"
            if attempt < self.retries:  # no sleep after the last try
                time.sleep(wait)
        raise TeacherError(
            f"teacher endpoint {endpoint} failed {self.retries + 1} times, last with {last_error}; "
            "the notes already written are cached, so running again resumes"
        )

    def notes(self, conversation: Conversation) -> Notes:
        return model_notes(self.complete, conversation)

    def notes_many(self, conversations: list[Conversation], on_notes: Callable[[Conversation, Notes], None]) -> None:
        """Every conversation's notes, `concurrency` conversations at a time, each handed to `on_notes`
        as soon as it exists; after a failure the others still finish, then the first error is raised."""
        first_error: BaseException | None = None
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            futures = {pool.submit(self.notes, c): c for c in conversations}
            for future in as_completed(futures):
                try:
                    on_notes(futures[future], future.result())
                except Exception as error:  # kept, raised once the others are done
                    first_error = first_error or error
        if first_error is not None:
            raise first_error


def drop_contradicting_negatives(notes: list[Notes], texts: list[str]) -> list[Notes]:
    """A "no" must be true of the whole memory: drop negative wordings that occur in any of `texts`
    (the conversations being learned) or resemble a positive wording of any notes (earlier ones too)."""
    words = content_words(" ".join(texts))
    positives = [w for n in notes for item in (*n.topics, *n.facts) for w in item.wordings]

    def still_false(items: list, kind: type) -> list:
        kept = []
        for item in items:
            wordings = [w for w in item.wordings if is_absent(w, words) and not _overlaps(w, positives)]
            if wordings:
                kept.append(kind(wordings[0], wordings[1:]))
        return kept

    for n in notes:
        n.negatives = still_false(n.negatives, Topic)
        n.false_facts = still_false(n.false_facts, Fact)
    return notes


def make_teacher(
    kind: str, model: str | None = None, url: str | None = None, api_key_env: str = "OPENAI_API_KEY"
) -> Teacher:
    if kind == "extractive":
        return ExtractiveTeacher()
    if kind == "local":
        return LocalTeacher(model or "qwen2.5-0.5b")
    if kind == "openai":
        if not url:
            raise InputError("the openai teacher needs --teacher-url")
        return OpenAITeacher(url, model or "default", api_key_env=api_key_env)
    raise InputError(f"unknown teacher {kind!r} (extractive, local, openai)")


class NotesCache:
    """Teacher output on disk, keyed by teacher, prompt version and conversation content hash (not by
    user: two users with the same conversation share an entry, see `remove`)."""

    def __init__(self, root: Path):
        self.root = root

    def _path(self, teacher: Teacher, conversation: Conversation) -> Path:
        key = re.sub(r"[^\w.-]+", "_", teacher.name)
        return self.root / f"v{PROMPT_VERSION}" / key / f"{conversation.content_hash}.json"

    def get(self, teacher: Teacher, conversation: Conversation) -> Notes | None:
        path = self._path(teacher, conversation)
        if not path.exists():
            return None
        try:
            notes = Notes.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, KeyError, TypeError) as error:
            raise InputError(
                f"{user_file_problem(error)}; delete it (or run with --regenerate-notes) and the "
                "teacher writes the notes again",
                path=path,
            ) from None
        notes.conversation_id = conversation.id  # same content may arrive under another id
        return notes

    def remove(self, content_hash: str) -> int:
        """Delete every cached entry for one conversation's content (all teachers, all prompt versions),
        for `forget` and user deletion; returns how many. Another user with the same conversation
        keeps their notes (their manifest holds them) and only loses the shortcut."""
        entries = list(self.root.glob(f"v*/*/{content_hash}.json"))
        for entry in entries:
            entry.unlink(missing_ok=True)
        return len(entries)

    def put(self, teacher: Teacher, conversation: Conversation, notes: Notes) -> None:
        write_atomic(self._path(teacher, conversation), json.dumps(notes.to_dict(), ensure_ascii=False, indent=1))


def augment(
    conversations: list[Conversation], teacher: Teacher, cache: NotesCache | None, regenerate: bool = False
) -> list[Notes]:
    """Notes for every conversation, from the cache where possible. Each conversation's notes are
    cached as soon as they exist, so a failure or Ctrl-C loses only those in progress; a concurrent
    teacher (openai) is asked for all missing ones at once."""
    found = {c.id: None if (regenerate or cache is None) else cache.get(teacher, c) for c in conversations}
    missing = [c for c in conversations if found[c.id] is None]

    def keep(conversation: Conversation, notes: Notes) -> None:
        if cache is not None:
            cache.put(teacher, conversation, notes)
        found[conversation.id] = notes

    if isinstance(teacher, OpenAITeacher):
        teacher.notes_many(missing, keep)
    else:
        for conversation in missing:
            keep(conversation, teacher.notes(conversation))
    return [found[c.id] for c in conversations]
