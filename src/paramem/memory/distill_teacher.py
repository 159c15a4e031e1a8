"""Context distillation's teacher (distill.py has the whole method): the base model reading the
conversation answers queries (the teacher's notes, or its own self-study), and its top-k
log-probabilities at every answer position become the targets, computed once and stored with the
memory."""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import time
from dataclasses import dataclass, field, fields, replace

import torch
from transformers import PreTrainedTokenizerBase

from paramem.augment.pairs import training_pairs
from paramem.augment.templates import fact_clause
from paramem.config import TrainConfig
from paramem.data.conversations import Conversation
from paramem.data.notes import Notes
from paramem.memory.cartridge import memory_head, slot_prompt
from paramem.model.decode import decode_after_prefix, end_token_ids, left_padded, repeated
from paramem.model.prompts import encode_prompt


@dataclass(frozen=True)
class DistillTarget:
    """The teacher's answer to one query, with its top-k log-probabilities at every answer token."""

    question: str
    answer_ids: list[int]  # the teacher's greedy answer, ending with its end-of-turn token when it ended
    top_ids: list[list[int]]  # per answer position: the teacher's k likeliest tokens
    top_logprobs: list[list[float]]  # their log-probabilities under the teacher's full softmax
    kind: str = "answer"  # "answer" (to a query) or "check" (a yes/no check: the first answer token only)
    # The teacher's hidden states at the answer positions, (layers, answer tokens, width), with
    # `distill_hidden_weight`; never stored (the module docstring says why), so replay goes without.
    hidden: torch.Tensor | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class TeacherCost:
    """Where the teacher's time on one conversation went: the query budget is the main cost of learning."""

    prefill_seconds: float  # reading the conversation once (its keys and values)
    writing_seconds: float  # writing its own self-study queries
    answering_seconds: float  # answering every query, keeping the top-k log-probabilities
    queries: int  # queries answered

    @property
    def seconds(self) -> float:
        return self.prefill_seconds + self.writing_seconds + self.answering_seconds


def conversation_slot(tokenizer: PreTrainedTokenizerBase, conversation: Conversation, date: str | None) -> list[int]:
    """The conversation as the teacher reads it, right after paramem's system prompt, where a
    cartridge sits in the student's prompt (cartridge.py)."""
    when = f" on {date}" if date else ""
    return tokenizer(f"\n\nOur conversation{when}:\n{conversation.text}", add_special_tokens=False)["input_ids"]


# Self-study (Cartridges, arXiv 2506.06266): the teacher, reading the conversation, writes its own
# queries from seed prompts, so what the memory learns is not only what the notes teacher noticed.
# "{speaker}" seeds are asked once per speaker: LoCoMo asks as much about the second speaker as the first.
SELF_STUDY_SEEDS = (
    "Ask me one question about a specific detail of the conversation above. Write only the question.",
    "Ask me one question about what {speaker} said, did or wanted in the conversation above. Write only the question.",
    "Write a yes/no question about a fact stated in the conversation above. Write only the question.",
    "Ask me to summarise one part of the conversation above. Write only the request.",
    "Write a yes/no question about something that was never mentioned in the conversation above. "
    "Write only the question.",
)


# Yes/no checks (`TrainConfig.distill_checks`): from single turns of the conversation the teacher
# states a fact and writes a near miss beside it, and each is asked as a yes/no question. Only the
# teacher's first answer token is kept, so a check costs one step after its question where an answer
# costs dozens: many facts are covered for the price of a few answers. The teacher labels every check
# itself (a near miss it still believes is learned as believed); nothing is labelled by construction.
CHECK_PROMPTS = (
    'Here is a message {speaker} wrote in the conversation above: "{text}"\n'
    "State one fact this message tells, in one sentence that names who it is about. Write only the sentence.",
    'Here is a message {speaker} wrote in the conversation above: "{text}"\n'
    "Write one sentence about {speaker} that sounds like this message but says something that was never "
    "said in the conversation. Write only the sentence.",
)


# Several question forms, so that the memory learns the facts rather than one wording of the question
CHECK_QUESTIONS = ("Is it true that {fact}?", "Did we discuss that {fact}?", "Was it mentioned that {fact}?")


# Questions the teacher answers in one batch: on 2 AVX2 cores its whole job on a LoCoMo session took
# 1.8x less time than one question at a time (benchmarks/teacher_batch.py); each row's copy of a
# session's keys and values takes about 12 MB with the 0.5B model.
TEACHER_BATCH = 16


class TeacherReading:
    """The base model with one conversation in its prompt, in the slot where a cartridge sits: the
    conversation's keys and values are computed once, and every query continues from a copy."""

    def __init__(self, model, tokenizer: PreTrainedTokenizerBase, conversation: Conversation, date: str | None):
        self.model, self.tokenizer = model, tokenizer
        self.head, self.slot = memory_head(tokenizer), conversation_slot(tokenizer, conversation, date)
        # who the "{speaker}" seeds ask about: the names LoCoMo-like logs give, else "I" and "you"
        self.turns = [
            (m.name or {"user": "I", "assistant": "you"}.get(m.role, m.role), m.content.strip())
            for m in conversation.messages
            if m.content.strip()
        ]
        self.speakers = list(dict.fromkeys(speaker for speaker, _ in self.turns))
        with torch.inference_mode():
            self.cache = model(input_ids=torch.tensor([self.head + self.slot]), use_cache=True).past_key_values
        self.end_ids = end_token_ids(tokenizer)

    def answer_many(
        self,
        questions: list[str],
        max_tokens: int,
        top_k: int,
        sampler: torch.Generator | None = None,
        kind: str = "answer",
    ) -> list[DistillTarget]:
        """The teacher's answer to each question, greedy (or sampled at temperature 1 with `sampler`),
        with its top-k log-probabilities at every answer position, TEACHER_BATCH questions at a time."""
        targets = []
        for start in range(0, len(questions), TEACHER_BATCH):
            targets += self._answer_batch(questions[start : start + TEACHER_BATCH], max_tokens, top_k, sampler, kind)
        return targets

    def _answer_batch(
        self, questions: list[str], max_tokens: int, top_k: int, sampler: torch.Generator | None, kind: str
    ) -> list[DistillTarget]:
        # Each row: the conversation's cached keys and values, then its own question (decode.py).
        rests = [self._after_conversation(q) for q in questions]
        pad = self.tokenizer.pad_token_id or 0
        rows = decode_after_prefix(
            self.model, self.cache, self.read, rests, max_tokens, self.end_ids, pad, top_k, sampler
        )
        return [DistillTarget(q, row.ids, row.top_ids, row.top_logprobs, kind) for q, row in zip(questions, rows)]

    @property
    def read(self) -> int:
        """Tokens in the cache: paramem's system prompt head, then the conversation."""
        return len(self.head) + len(self.slot)

    def _after_conversation(self, question: str) -> list[int]:
        """The tokens of a question's prompt that follow the cached conversation."""
        return slot_prompt(self.head, self.slot, encode_prompt(self.tokenizer, question))[self.read :]

    def with_hidden_states(self, targets: list[DistillTarget], layers: list[int]) -> list[DistillTarget]:
        """`targets` with the teacher's hidden states at `layers` (indices into the model's
        `hidden_states`: 0 the embeddings, i the output of layer i) at every answer position, the
        position whose output predicted each answer token: one teacher-forced pass per batch."""
        out = []
        for start in range(0, len(targets), TEACHER_BATCH):
            batch = targets[start : start + TEACHER_BATCH]
            rests = [self._after_conversation(t.question) + t.answer_ids[:-1] for t in batch]
            ids, mask, positions = left_padded(self.read, rests, self.tokenizer.pad_token_id or 0)
            with torch.inference_mode():
                states = self.model(
                    input_ids=ids,
                    attention_mask=mask,
                    position_ids=positions,
                    past_key_values=repeated(self.cache, len(rests)),
                    output_hidden_states=True,
                    logits_to_keep=1,
                ).hidden_states
            for row, target in enumerate(batch):
                n = len(target.answer_ids)  # rows are left-padded: the answer positions are the last n
                hidden = torch.stack([states[layer][row, -n:] for layer in layers])
                out.append(replace(target, hidden=hidden.clone()))
        return out

    def checks(self, count: int) -> list[str]:
        """Up to `count` yes/no check questions: turns spread evenly over the conversation, each giving a
        stated fact and a near miss (greedy, so the same conversation gives the same checks)."""
        turns = self.turns
        if not turns or count < 1:
            return []
        needed = min(len(turns), -(-count // len(CHECK_PROMPTS)))  # turns, each giving one check per prompt
        picked = [turns[i * len(turns) // needed] for i in range(needed)]
        asked = [
            prompt.format(speaker=speaker, text=text[:400]) for speaker, text in picked for prompt in CHECK_PROMPTS
        ]
        questions: list[str] = []
        for n, written in enumerate(self.answer_many(asked, 48, 1)):
            fact = _first_line(self.tokenizer.decode(written.answer_ids, skip_special_tokens=True))
            i, j = divmod(n, len(CHECK_PROMPTS))  # turn i, prompt j
            question = CHECK_QUESTIONS[(i + j) % len(CHECK_QUESTIONS)].format(fact=fact_clause(fact.rstrip("!?")))
            if fact and question not in questions:
                questions.append(question)
        return questions[:count]

    def self_study(self, count: int, seed: str) -> list[str]:
        """`count` queries the teacher writes itself: each seed prompt (per speaker where it names
        one) answered greedily, then sampled again, as many at a time as are still wanted, until there
        are enough; what is not a usable question is dropped, so there may be fewer."""
        seeds = [s.format(speaker=name) for s in SELF_STUDY_SEEDS for name in (self.speakers if "{" in s else [""])]
        sampler = torch.Generator().manual_seed(int(hashlib.sha256(seed.encode()).hexdigest()[:15], 16))
        queries: list[str] = []

        def keep(written: list[DistillTarget]) -> None:
            for target in written:
                query = _first_line(self.tokenizer.decode(target.answer_ids, skip_special_tokens=True))
                if query and query not in queries and len(queries) < count:
                    queries.append(query)

        if count < 1:
            return queries
        keep(self.answer_many(seeds, 48, 1))  # every seed once, greedily, in one batch
        attempts = len(seeds)
        while len(queries) < count and attempts < 3 * count:  # a bound: a small model may repeat itself
            tries = min(count - len(queries), 3 * count - attempts)
            keep(self.answer_many([seeds[(attempts + i) % len(seeds)] for i in range(tries)], 48, 1, sampler))
            attempts += tries
        return queries


def _first_line(text: str) -> str:
    """A written query: its first non-empty line, without list marks or quotes; empty when too short."""
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    line = line.lstrip("-*0123456789. ").strip("\"' ")
    return line if len(line.split()) >= 3 else ""


def notes_queries(notes: Notes, config: TrainConfig) -> list[str]:
    """The questions of the notes' pairs (closed both ways, open, the recall cue), the recall cue first."""
    pairs = training_pairs(notes, 1, config.pairs)
    questions = list(dict.fromkeys(p.question for p in pairs if p.question and p.kind == "recall"))
    rest = list(dict.fromkeys(p.question for p in pairs if p.question and p.kind != "recall"))
    random.Random(f"{config.seed}/queries/{notes.conversation_id}").shuffle(rest)
    return questions + [q for q in rest if q not in questions]


def distill_queries(notes: Notes, config: TrainConfig, reading: TeacherReading | None = None) -> list[str]:
    """What the teacher is asked about a conversation, `distill_queries` at most: the notes' questions,
    the recall cue always among them, and up to `self_study_queries` the teacher writes itself (when a
    `reading` is given); the notes fill what self-study leaves."""
    count = min(config.self_study_queries, config.distill_queries - 1)  # the recall cue keeps its place
    written = reading.self_study(count, f"{config.seed}/{notes.conversation_id}") if reading and count else []
    from_notes = [q for q in notes_queries(notes, config) if q not in written]
    return from_notes[: config.distill_queries - len(written)] + written


def teacher_targets(
    model, tokenizer: PreTrainedTokenizerBase, conversation: Conversation, notes: Notes, config: TrainConfig
) -> tuple[list[DistillTarget], TeacherCost]:
    """The teacher's targets for every query about one conversation, and what each stage cost.
    `model` is read as it is: call it with the adapter off (`with model.disable_adapter():`) so the
    teacher is the base model."""
    started = time.perf_counter()
    reading = TeacherReading(model, tokenizer, conversation, notes.date)
    read = time.perf_counter()
    queries = distill_queries(notes, config, reading if config.self_study_queries else None)
    checks = reading.checks(config.distill_checks)
    written = time.perf_counter()
    targets = reading.answer_many(queries, config.distill_answer_tokens, config.distill_top_k)
    targets += reading.answer_many(checks, 1, config.distill_top_k, kind="check")
    if config.distill_hidden_weight > 0:
        layers = matched_layers(model.config.num_hidden_layers, config.distill_hidden_layers)
        targets = reading.with_hidden_states(targets, layers)
    cost = TeacherCost(read - started, written - read, time.perf_counter() - written, len(targets))
    return targets, cost


def as_stored(targets: list[DistillTarget]) -> list[DistillTarget]:
    """The targets as replay reads them, in this run or a later one: without the hidden states."""
    return [replace(t, hidden=None) for t in targets]


def dump_targets(targets: list[DistillTarget]) -> bytes:
    """The targets as stored, without the teacher's hidden states (the module docstring says why)."""
    stored = [{f.name: getattr(t, f.name) for f in fields(t) if f.name != "hidden"} for t in targets]
    return gzip.compress(json.dumps(stored).encode("utf-8"))


def load_targets(data: bytes) -> list[DistillTarget]:
    return [DistillTarget(**t) for t in json.loads(gzip.decompress(data).decode("utf-8"))]


def matched_layers(depth: int, count: int) -> list[int]:
    """Indices into `hidden_states` of a model `depth` layers deep: `count` layers spread evenly,
    the last included (at most every layer; index 0, the embeddings, the memory cannot change)."""
    count = min(count, depth)
    return [round(depth * (j + 1) / count) for j in range(count)]
