"""The one answer path (issue 38): `paramem ask`, `chat`, the server and the evaluation's `paramem`
method all answer through `Responder`, so what is measured is what a user gets.

Where each answer comes from:
  text             the user's stored conversations (store/texts.py) hold every one the memory
                   learned: the base model reads the passages the text side retrieves (TEXT_RETRIEVER,
                   TEXT_K), the memory switched off. On LoCoMo the memory read beside retrieved
                   passages measured below the passages alone (README), so it is not added unproven.
  text and memory  some learned conversations' text is gone (--keep-text until-consolidated): the
                   memory reads the passages of the conversations still stored, and carries the rest.
  memory           no text at all: the memory alone, read as `ask` reads it (readers.py); an open
                   question's answer is written by the base model reading what the memory recites.
  nothing          nothing stored: every question is answered `ABSTAIN`, without a model.

Yes/no questions are answered by log-odds under the source's rule, fitted without the questions
asked (readers.py); from the text alone, one asking whether something was said ("Did we talk about my
rescue cat?") is asked of the passages instead ("Do the excerpts mention the user's rescue cat?",
said.py), in the first person against the user's own turns. Other questions are answered in words,
greedily, unless the gate says the text holds no answer: the model, reading the same passages, is
asked SUPPORT_QUESTION about the question, and a log-odds below SUPPORT_THRESHOLD, or passages
holding under COVERAGE_THRESHOLD of the question's content words, abstain. Each answer names its
evidence: the passages read (their conversations and dates), or that the memory alone answered.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from functools import cached_property

from transformers import PreTrainedTokenizerBase

from paramem.config import DEFAULT_MODEL
from paramem.data.conversations import Conversation
from paramem.data.notes import content_words
from paramem.errors import check_option
from paramem.model.loading import load_model
from paramem.model.prompts import SYSTEM_PROMPT
from paramem.model.scoring import LogOddsReader, YesNoScorer, is_yes_no_question
from paramem.read.answer import answer_many
from paramem.read.loading import load_memory
from paramem.read.readers import HYBRID_RULE, TEXT_RULE, ask, rule_thresholds
from paramem.read.retrieval import (
    RETRIEVERS,
    TEXT_K,
    TEXT_RETRIEVER,
    Passage,
    make_retriever,
    passages,
    retrieval_prompt,
)
from paramem.read.said import FIRST_PERSON, asked_of_the_excerpts
from paramem.store.user import UserMemory

ABSTAIN = "I don't know: we have not talked about that."
# The support check of an open question, and the gate on coverage beside it: an open question is
# answered "I don't know" when the model, reading the passages, doubts they answer it (support
# log-odds below SUPPORT_THRESHOLD) or when they hold under COVERAGE_THRESHOLD of its content words.
# Both fitted together on LoCoMo development samples 0-3 (benchmarks/answer_path.py): the pair that
# abstains most on adversarial and never-discussed questions while abstaining on at most 0.1 of the
# answerable ones (there: 0.09 of the answerable, 0.05 of category 5, 0.78 of never-discussed).
SUPPORT_QUESTION = 'Do the excerpts say the answer to the question "{question}"?'
SUPPORT_THRESHOLD = -0.72
COVERAGE_THRESHOLD = 0.45
# What the base model is told a recital is, when it writes an answer from one (read_recital).
RECITAL_HEADING = "What you remember of past conversations with this user (it may be wrong):"
# The memory alone is asked whether the conversation was had, and answers under its own rule.
MEMORY_SUPPORT_QUESTION = 'Did we talk about this: "{question}"?'


@dataclass(frozen=True)
class Evidence:
    conversation: str
    date: str | None
    text: str | None  # the passage read; None when the memory's weights answered
    source: str  # "text" or "memory"


@dataclass(frozen=True)
class Response:
    question: str
    answer: str  # "yes" or "no" for a yes/no question; words otherwise; ABSTAIN when abstaining
    yes_no: bool
    margin: float | None  # yes/no: the score minus its rule's threshold; open: the support check's, the same
    evidence: tuple[Evidence, ...]
    supported_by: str  # "text", "text and memory", "memory" or "nothing"
    abstained: bool = False


@dataclass(frozen=True)
class AnswerConfig:
    """How the answer path reads; the defaults are what ships."""

    retriever: str = TEXT_RETRIEVER  # bm25, dense or fused
    k: int = TEXT_K  # passages read per question
    support_threshold: float = SUPPORT_THRESHOLD  # an open question's support log-odds below it abstains
    coverage_threshold: float = COVERAGE_THRESHOLD  # so does one whose passages hold less of its words
    max_new_tokens: int = 48  # the longest answer in words
    # Recite, then retrieve (MemoRAG, arXiv 2409.05591): the memory first writes what it recalls for
    # the question, and that text joins the retrieval query. Off: on LoCoMo development sample 0 it
    # read 0.875 against the question alone's 0.896 (benchmarks/complement.py).
    recite: bool = False
    recite_tokens: int = 32  # the longest recitation
    # Complement (a): the memory reads the passages even when the text holds every learned
    # conversation (source "text and memory"). Off: on LoCoMo development sample 0 it read 0.750
    # against the text alone's 0.896 (benchmarks/complement.py).
    memory_beside_text: bool = False
    # With no text at all, an open question's answer is written by the base model reading what the
    # memory recites for it (the memory off while it writes), not by the memory itself, whose own
    # answers come in its training templates ("We talked about ... on <date>. The user ..."). On
    # LoCoMo development sample 0 (40 open questions): F1 0.081 against 0.036, answers in a template
    # 0.00 against 0.60 (benchmarks/complement.py --samples 0 --ways memory,recital --open 40).
    read_recital: bool = True

    def __post_init__(self):
        check_option(self.retriever in RETRIEVERS, "retriever", " or ".join(RETRIEVERS), self.retriever)
        check_option(self.k >= 1, "k (--k)", "at least 1", self.k)
        check_option(self.max_new_tokens >= 1, "max_new_tokens", "at least 1", self.max_new_tokens)


class Responder:
    """Answers for one user from `conversations` (their stored text) and `model` (their memory, or
    the base model when they have none). `memory` is None when the model holds no memory of theirs."""

    def __init__(
        self,
        model,
        tokenizer: PreTrainedTokenizerBase,
        conversations: list[Conversation],
        memory: UserMemory | None = None,
        config: AnswerConfig | None = None,
    ):
        self.model, self.tokenizer, self.memory = model, tokenizer, memory
        self.config = config or AnswerConfig()
        self.corpus = passages(conversations)
        self.retriever = make_retriever(self.config.retriever, self.corpus) if self.corpus else None
        stored = {c.id for c in conversations}
        learned = [] if memory is None else [r.id for r in memory.learned()]
        self.memory_only = [i for i in learned if i not in stored]  # learned, text gone: the memory carries them
        self._recited: dict[str, str] = {}
        if self.retriever is None:
            self.source = "memory" if memory is not None and learned else "nothing"
        else:
            beside = self.config.memory_beside_text and bool(learned)
            self.source = "text and memory" if self.memory_only or beside else "text"

    @classmethod
    def for_user(cls, user: str, home=None, dtype: str | None = None, config: AnswerConfig | None = None) -> Responder:
        """The answer path over everything `user`'s store holds: the base model with their memory
        when some learned conversation's text is gone, the base model alone when the text holds
        everything (the memory is not read then, so it is not loaded), no model when nothing is stored."""
        memory = UserMemory(user, home).require()
        conversations = memory.texts.conversations()
        stored = {c.id for c in conversations}
        wanted = config is not None and (config.recite or config.memory_beside_text)  # reads the memory
        text_gone = any(record.id not in stored for record in memory.learned())
        if text_gone or (wanted and memory.current_version() is not None):
            model, tokenizer, memory = load_memory(user, home, dtype)
            return cls(model, tokenizer, conversations, memory, config)
        if not conversations:
            return cls(None, None, [], None, config)
        settings = memory.settings()
        model, tokenizer = load_model(settings.get("base_model", DEFAULT_MODEL), dtype, settings.get("dtype"))
        return cls(model.eval(), tokenizer, conversations, None, config)

    def respond(self, questions: list[str]) -> list[Response]:
        if self.source == "nothing":  # no text, no memory: "no" to yes/no questions, "I don't know" to others
            return [
                Response(q, "no", True, None, (), "nothing")
                if is_yes_no_question(q)
                else Response(q, ABSTAIN, False, None, (), "nothing", True)
                for q in questions
            ]
        closed = [q for q in questions if is_yes_no_question(q)]
        opened = [q for q in questions if not is_yes_no_question(q)]
        answers = {**dict(zip(closed, self._yes_no(closed))), **dict(zip(opened, self._open(opened)))}
        return [answers[q] for q in questions]

    # -- reading -------------------------------------------------------------------------------

    @contextmanager
    def reading(self, memory: bool | None = None) -> Iterator[None]:
        """The model as this source reads (the memory off when the text holds everything), or with
        the memory on or off as `memory` says; off only where the model can switch it off."""
        on = self.source != "text" if memory is None else memory
        off = not on and hasattr(self.model, "disable_adapter")
        with self.model.disable_adapter() if off else nullcontext():
            yield

    def _found(self, questions: list[str]) -> list[list[Passage]]:
        if not questions:
            return []
        return self.retriever.search([self.query(q) for q in questions], self.config.k)

    def query(self, question: str) -> str:
        """What retrieval searches for `question`: the question, and with `recite` what the memory
        recites for it (once per question)."""
        if not (self.config.recite and self.memory is not None):
            return question
        if question not in self._recited:
            self._recited[question] = self.recite([question])[0]
        return f"{question} {self._recited[question]}"

    def recite(self, questions: list[str]) -> list[str]:
        """What the memory, switched on, writes for each question on its own (no passages)."""
        return answer_many(
            self.model, self.tokenizer, questions, [SYSTEM_PROMPT] * len(questions), self.config.recite_tokens
        )

    def _evidence(self, found: list[Passage]) -> tuple[Evidence, ...]:
        text = tuple(Evidence(p.conversation, p.date, p.text, "text") for p in found)
        return text + tuple(Evidence(i, None, None, "memory") for i in self.memory_only)

    def _yes_no(self, questions: list[str]) -> list[Response]:
        if not questions:
            return []
        if self.retriever is None:  # the memory alone, as `ask` reads it
            return [
                Response(a.question, a.answer, True, a.margin, (Evidence("", None, a.evidence, "memory"),), "memory")
                for a in ask(self.model, self.tokenizer, self.memory, questions)
            ]
        margins, found = self.yes_no_margins(questions)
        return [
            Response(q, "yes" if m > 0 else "no", True, m, self._evidence(f), self.source)
            for q, m, f in zip(questions, margins, found)
        ]

    def yes_no_margins(self, questions: list[str]) -> tuple[list[float], list[list[Passage]]]:
        """Each yes/no question's margin from the passages (above 0: yes) and the passages read. From
        the text alone, a question asking whether something was said is asked of the passages
        instead, at a threshold of 0 (said.py); every other question is read as asked, under the
        source's rule."""
        margins, _, found = self._margins_and_threshold(questions)
        return margins, found

    def _margins_and_threshold(self, questions: list[str]) -> tuple[list[float], float, list[list[Passage]]]:
        threshold = self.yes_no_threshold()  # one forward pass: computed once per batch of questions
        asked, found = self.yes_no_reading(questions)
        with self.reading():
            scores = YesNoScorer(self.model, self.tokenizer).log_odds(asked, [retrieval_prompt(f) for f in found])
        margins = [s if a != q else s - threshold for s, a, q in zip(scores, asked, questions)]
        return margins, threshold, found

    def yes_no_reading(self, questions: list[str]) -> tuple[list[str], list[list[Passage]]]:
        """Each yes/no question as the passages are asked it, and the passages. Where the text alone
        answers a question about what was said, it is reworded (said.py); in the first person ("Did I
        tell you ...", "my rescue cat"), it is read against the user's own turns, since the
        assistant's lines are not evidence of what the user said. Every other question is read as
        asked, against every turn."""
        found = self._found(questions)
        if self.source != "text":
            return list(questions), found
        asked = [asked_of_the_excerpts(q) or q for q in questions]
        said = [i for i, (a, q) in enumerate(zip(asked, questions)) if a != q and FIRST_PERSON.search(q)]
        if said:
            own = self.users_own.search([self.query(questions[i]) for i in said], self.config.k)
            for i, passages_of_the_user in zip(said, own):
                found[i] = passages_of_the_user
        return asked, found

    @cached_property
    def users_own(self):
        """A retriever over the user's own turns (every turn if they have none), built when first
        needed: a question about what the user said ("Did I tell you about my rescue cat?") is read
        against them, since the assistant's lines are not evidence of the user's cat (said.py)."""
        users_turns = [p for p in self.corpus if p.role == "user"]
        return make_retriever(self.config.retriever, users_turns) if users_turns else self.retriever

    def yes_no_threshold(self) -> float:
        """The threshold of the source's rule for a question read as asked (readers.py)."""
        with self.reading():
            return rule_thresholds(PathReader(self).inner.score)[self.rule]

    @property
    def rule(self) -> str:
        """The decision rule yes/no answers from the text are read under (readers.py)."""
        return TEXT_RULE if self.source == "text" else HYBRID_RULE

    def yes_no_reader(self) -> PathReader:
        """How this path scores yes/no questions from the text, as a `Reader` (the evaluation's
        `paramem` method reads through it)."""
        return PathReader(self)

    def _systems(self, questions: list[str]) -> list[str]:
        return [retrieval_prompt(found) for found in self._found(questions)]

    def system_for(self, message: str, system: str = SYSTEM_PROMPT) -> str:
        """The system prompt a chat reply to `message` is written under: `system`, then the stored
        passages retrieved for the message, where there is text (`chat` and the server)."""
        return system if self.retriever is None else retrieval_prompt(self._found([message])[0], system)

    def support(self, questions: list[str]) -> tuple[list[list[Passage]], list[str], list[float]]:
        """For open questions: the passages found, the system prompts the answers are written under,
        and each question's support margin (below 0: abstain). From the text, the support question's
        log-odds minus `support_threshold`; from the memory alone, its margin under the memory's rule."""
        if self.retriever is None:
            asked = [MEMORY_SUPPORT_QUESTION.format(question=q.strip()) for q in questions]
            margins = [a.margin for a in ask(self.model, self.tokenizer, self.memory, asked)]
            return [[] for _ in questions], [SYSTEM_PROMPT] * len(questions), margins
        found = self._found(questions)
        systems = [retrieval_prompt(f) for f in found]
        asked = [SUPPORT_QUESTION.format(question=q.strip()) for q in questions]
        with self.reading():
            scores = YesNoScorer(self.model, self.tokenizer).log_odds(asked, systems)
        return found, systems, [s - self.config.support_threshold for s in scores]

    def write(self, questions: list[str], systems: list[str]) -> list[str]:
        """Greedy answers in words, each under its system prompt."""
        with self.reading():
            return answer_many(self.model, self.tokenizer, questions, systems, self.config.max_new_tokens)

    def write_from_recitals(self, questions: list[str]) -> list[str]:
        """Answers in words from what the memory recites for each question, read by the base model
        (the memory switched off, where it can be) as it reads retrieved excerpts."""
        if not questions:
            return []
        recitals = self.recite(questions)
        systems = [f"{SYSTEM_PROMPT}\n\n{RECITAL_HEADING}\n- {r}" for r in recitals]
        with self.reading(memory=False):
            return answer_many(self.model, self.tokenizer, questions, systems, self.config.max_new_tokens)

    def _open(self, questions: list[str]) -> list[Response]:
        if not questions:
            return []
        found, systems, margins = self.support(questions)
        least = self.config.coverage_threshold if self.retriever is not None else 0.0
        kept = [i for i, m in enumerate(margins) if m >= 0 and coverage(questions[i], found[i]) >= least]
        asked = [questions[i] for i in kept]
        if self.retriever is None and self.config.read_recital:
            written = self.write_from_recitals(asked)
        else:
            written = self.write(asked, [systems[i] for i in kept])
        replies = dict(zip(kept, written))
        return [
            Response(
                q, replies.get(i, ABSTAIN), False, margins[i], self._evidence(found[i]), self.source, i not in replies
            )
            for i, q in enumerate(questions)
        ]


class PathReader:
    """The answer path's yes/no scores from the text, as a `Reader`: on the scale of the path's rule,
    so that a score minus that rule's threshold is the path's margin (`Responder.yes_no_margins`);
    `inner` reads each question as asked (log-odds with the passages it retrieves, the memory switched
    as the path switches it)."""

    def __init__(self, responder: Responder):
        self.responder = responder
        self.inner = LogOddsReader(responder.model, responder.tokenizer, responder._systems)

    def score(self, questions: list[str]) -> list[float]:
        margins, threshold, _ = self.responder._margins_and_threshold(questions)
        return [m + threshold for m in margins]

    def prompt_tokens(self, questions: list[str]) -> int:
        """Mean prompt tokens per question, each question as the passages are asked it."""
        asked, found = self.responder.yes_no_reading(questions)
        prompts = self.inner.scorer.prompts(asked, [retrieval_prompt(f) for f in found])
        return sum(len(p) for p in prompts) // max(len(prompts), 1) + getattr(self.responder.model, "prefix_tokens", 0)


def coverage(question: str, found: list[Passage]) -> float:
    """The share of the question's content words that the passages contain (1 for a question with
    none, such as "Why?")."""
    asked = content_words(question)
    if not asked:
        return 1.0
    return len(asked & content_words(" ".join(p.text for p in found))) / len(asked)
