"""Context distillation: the memory learns to answer as the same model answers with the conversation in
its prompt (Cartridges / self-study, arXiv 2506.06266; knowledge modules, arXiv 2503.08727).

  teacher  the base model (adapter off) with the conversation, and its date, in the system prompt
           (right after paramem's, where a cartridge sits in the student's: cartridge.py);
           for each query it answers greedily, and at every answer position its top-k log-probabilities
           are kept. The conversation is read once per conversation (its keys and values are reused
           for every query), and the targets never change while it is learned: they are computed once
           and kept across epochs and learning rates, and stored with the memory, so that replay of
           earlier conversations reads the stored targets, not the raw text.
  student  the base model with the memory, asked the same query with paramem's short system prompt and
           no conversation; it learns by KL(teacher top-k || student) at every answer position, and,
           with `distill_hidden_weight`, by matching the teacher's hidden states there too (deep
           context distillation); those are kept only while their conversation is learned: at the
           model's width a position and layer (1.8 KB in bf16 on the 0.5B model) they would
           outweigh the stored targets many times over.

`TrainConfig.objective = "distill"` selects it; PLUM's weighted cross-entropy stays the default until
a measurement says otherwise.
"""

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
from paramem.memory.batching import length_buckets
from paramem.memory.cartridge import memory_head, slot_prompt
from paramem.model.decode import decode_after_prefix, end_token_ids, left_padded, repeated
from paramem.model.loading import decoder_and_head
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


@dataclass(frozen=True)
class DistillExample:
    input_ids: list[int]  # the student's prompt (no conversation), then the teacher's answer
    answer_start: int  # index of the first answer token in input_ids
    top_ids: list[list[int]]
    top_logprobs: list[list[float]]
    weight: float = 1.0  # how much each of its answer positions counts in the loss
    hidden: torch.Tensor | None = None  # the teacher's hidden states there, (layers, answer tokens, width)


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


def matched_layers(depth: int, count: int) -> list[int]:
    """Indices into `hidden_states` of a model `depth` layers deep: `count` layers spread evenly,
    the last included (at most every layer; index 0, the embeddings, the memory cannot change)."""
    count = min(count, depth)
    return [round(depth * (j + 1) / count) for j in range(count)]


def encode_target(tokenizer: PreTrainedTokenizerBase, target: DistillTarget, weight: float = 1.0) -> DistillExample:
    """The student's view of a target: the question asked without the conversation, then the answer."""
    prompt = encode_prompt(tokenizer, target.question)
    return DistillExample(
        prompt + target.answer_ids, len(prompt), target.top_ids, target.top_logprobs, weight, target.hidden
    )


def distill_batches(
    examples: list[DistillExample], batch_size: int, pad_id: int, rng: random.Random
) -> list[dict[str, torch.Tensor]]:
    """Length-bucketed batches in shuffled order, with the answer positions marked: position t of
    `predict` is True when the token at t + 1 is an answer token, whose teacher targets follow in
    row-major order in `top_ids` / `top_logprobs`. Where any example carries the teacher's hidden
    states, `hidden` holds them in the same order, (positions, layers, width), and `has_hidden`
    marks the positions that have them (replayed targets do not)."""
    out = []
    for rows in length_buckets(examples, batch_size, rng):
        batch = _padded_batch(rows, pad_id)
        carried = [r.hidden for r in rows if r.hidden is not None]
        if carried:
            layers, _, width = carried[0].shape
            batch["hidden"] = torch.cat(
                [
                    r.hidden.transpose(0, 1)
                    if r.hidden is not None
                    else carried[0].new_zeros(len(r.top_ids), layers, width)
                    for r in rows
                ]
            )
            batch["has_hidden"] = torch.tensor(
                [r.hidden is not None for r in rows for _ in r.top_ids], dtype=torch.bool
            )
        out.append(batch)
    return out


def _padded_batch(rows: list[DistillExample], pad_id: int) -> dict[str, torch.Tensor]:
    """The rows right-padded to the longest, their answer positions marked, their teacher targets
    concatenated in row-major order."""
    width = max(len(r.input_ids) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    predict = torch.zeros((len(rows), width), dtype=torch.bool)
    top_ids, top_logprobs, weights = [], [], []
    for row, example in enumerate(rows):
        n = len(example.input_ids)
        ids[row, :n] = torch.tensor(example.input_ids)
        mask[row, :n] = 1
        predict[row, example.answer_start - 1 : n - 1] = True
        top_ids += example.top_ids
        top_logprobs += example.top_logprobs
        weights += [example.weight] * len(example.top_ids)
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "predict": predict,
        "top_ids": torch.tensor(top_ids),
        "top_logprobs": torch.tensor(top_logprobs),
        "weights": torch.tensor(weights),
    }


def kl_to_top_k(
    student_logits: torch.Tensor,
    top_ids: torch.Tensor,
    top_logprobs: torch.Tensor,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean over positions (weighted by `weights`, when given) of KL(p || q): p the teacher's
    distribution over its top-k tokens (renormalised over them), q the student's full softmax read at
    those tokens."""
    teacher = top_logprobs.float().log_softmax(-1)
    student = student_logits.float().log_softmax(-1).gather(-1, top_ids)
    per_position = (teacher.exp() * (teacher - student)).sum(-1)
    if weights is None:
        return per_position.mean()
    return (per_position * weights).sum() / weights.sum()


def hidden_distance(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean over positions and layers of |student - teacher|_1 / |teacher|_1, deep context
    distillation's distance: normalised per layer, so that layers of larger activations do not
    dominate and the weight beside the KL means the same for any model."""
    student, teacher = student.float(), teacher.float()
    return ((student - teacher).abs().sum(-1) / teacher.abs().sum(-1).clamp_min(1e-6)).mean()


def distillation_loss(
    model: torch.nn.Module, batch: dict[str, torch.Tensor], hidden_weight: float = 0.0
) -> torch.Tensor:
    """`kl_to_top_k` of a batch, the vocabulary head run only at answer positions; with `hidden_weight`
    and the teacher's hidden states in the batch, plus that weight times their `hidden_distance` at
    the positions that have them, at the same `matched_layers` the teacher's were taken at."""
    decoder, head = decoder_and_head(model)
    matching = hidden_weight > 0 and "hidden" in batch
    out = decoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=matching)
    predict = batch["predict"]
    loss = kl_to_top_k(
        head(out.last_hidden_state[predict]), batch["top_ids"], batch["top_logprobs"], batch.get("weights")
    )
    if matching:
        layers = matched_layers(model.config.num_hidden_layers, batch["hidden"].shape[1])
        student = torch.stack([out.hidden_states[layer][predict] for layer in layers], dim=1)
        kept = batch["has_hidden"]
        loss = loss + hidden_weight * hidden_distance(student[kept], batch["hidden"][kept])
    return loss


def as_stored(targets: list[DistillTarget]) -> list[DistillTarget]:
    """The targets as replay reads them, in this run or a later one: without the hidden states."""
    return [replace(t, hidden=None) for t in targets]


def dump_targets(targets: list[DistillTarget]) -> bytes:
    """The targets as stored, without the teacher's hidden states (the module docstring says why)."""
    stored = [{f.name: getattr(t, f.name) for f in fields(t) if f.name != "hidden"} for t in targets]
    return gzip.compress(json.dumps(stored).encode("utf-8"))


def load_targets(data: bytes) -> list[DistillTarget]:
    return [DistillTarget(**t) for t in json.loads(gzip.decompress(data).decode("utf-8"))]
