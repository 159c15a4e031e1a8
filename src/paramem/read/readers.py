"""Readers: how a yes/no answer is read off a model. Every reader gives each question a score, higher
meaning "yes"; a decision rule turns scores into answers. `ask`, `eval` and the trainer's epoch choice
all go through a `Reader`, so a new readout is one class here.

  log-odds  PLUM's: log P(yes) - log P(no) of the first answer token (`LogOddsReader`)
  recall    the memory recalls each learned conversation from its date alone, and a question scores its
            best embedding similarity to a recalled sentence, minus recall.RECALL_THRESHOLD
            (`RecallReader`; matched against the raw conversations instead, it is what perfect recall
            would give)

Either reads the memory alone. The memory read beside the user's passages is the answer path's
(respond.py), by log-odds under HYBRID_RULE.

Decision rules (how scores become yes/no; every method is scored under every rule, the same way):
  prior     the score minus that of a content-free question ("Did we discuss that?")
  heldout   a threshold fitted on the teacher's held-out reworded pairs (never on the probes)
  balanced  the median score of those held-out pairs: they are half yes, half no by construction
  raw       the score above 0: P(yes) > P(no), or similarity above recall.RECALL_THRESHOLD
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from paramem.augment.pairs import QAPair, heldout_pairs
from paramem.config import Form
from paramem.errors import InputError
from paramem.metrics.yes_no import fit_threshold
from paramem.model.scoring import CONTENT_FREE_QUESTION, LogOddsReader, Reader
from paramem.read.recall import RECALL_THRESHOLD, RecallConfig, SentenceMatcher, recollections
from paramem.store.user import UserMemory

READOUTS = ("log-odds", "recall")
DECISION_RULES = ("prior", "heldout", "balanced", "raw")
# The rule `paramem ask` uses for each readout, and the one figures are quoted under.
MAIN_RULE = {"log-odds": "prior", "recall": "balanced"}
# Cartridges read alone are the exception: through them the content-free question scores above most
# true facts, so the prior rule says no to nearly everything. The balanced rule read them best on
# LoCoMo development samples 0 and 1 (docs/experiments.md, session 15).
CARTRIDGE_RULE = "balanced"
# A memory read beside retrieved passages: the rule every hybrid figure was taken under (the README's
# main table: cartridges + dense 0.750 on the report samples), fixed before they were computed.
HYBRID_RULE = "prior"
# The methods that read the text (none, context, bm25, dense) are read by log-odds, under its rule.
TEXT_RULE = MAIN_RULE["log-odds"]


def main_rule(readout: str, form: str | None = None) -> str:
    """The rule a memory of `form` ("sequential" or "cartridge") is read under by default."""
    if form == Form.CARTRIDGE and readout == "log-odds":
        return CARTRIDGE_RULE
    return MAIN_RULE.get(readout, "prior")


class RecallReader:
    """A question scores its best similarity to a sentence of `texts` (what the memory recalled, or
    the raw conversations), minus `threshold`."""

    def __init__(self, texts: list[str], threshold: float = RECALL_THRESHOLD, recalled: bool = True):
        self.matcher = SentenceMatcher(texts, threshold)
        self.recollections = texts if recalled else None  # kept in results files when recalled

    def score(self, questions: list[str]) -> list[float]:
        return self.matcher.scores(questions)

    def prompt_tokens(self, questions: list[str]) -> int:
        return 0  # the recollections are made once per memory version, not per question


def default_readout(memory: UserMemory) -> str:
    """recall for a sequential memory (it learned the recall cue); log-odds for cartridges, which
    answer as the model reading the conversation does."""
    return "log-odds" if memory.form == Form.CARTRIDGE else "recall"


def memory_reader(
    model, tokenizer: PreTrainedTokenizerBase, memory: UserMemory, readout: str, recall: RecallConfig | None = None
) -> Reader:
    """The reader of a user's memory (loaded in `model` by `answer.load_memory`), as `ask` reads it;
    recollections are cached beside the adapter version."""
    if readout == "recall" and memory.form == Form.CARTRIDGE:
        raise InputError("the recall readout reads sequential memories; cartridges are read by log-odds")
    if readout == "recall":
        config = recall or RecallConfig()
        return RecallReader(recollections(model, tokenizer, memory, config), config.threshold)
    if readout == "log-odds":
        return LogOddsReader(model, tokenizer)
    raise InputError(f"unknown readout {readout!r} (available: {', '.join(READOUTS)})")


@dataclass(frozen=True)
class Answer:
    question: str
    answer: str  # "yes" or "no"
    margin: float  # the score minus the rule's threshold
    evidence: str | None = None  # the closest recalled sentence (recall), or the best retrieved passage


def _rule(rule: str | None, default: str) -> str:
    rule = rule or default
    if rule not in DECISION_RULES:
        raise InputError(f"unknown decision rule {rule!r} ({', '.join(DECISION_RULES)})")
    return rule


def _threshold(reader: Reader, memory: UserMemory, rule: str) -> float:
    """The rule's threshold, from the stored notes' held-out pairs where the rule reads them (the
    teacher's, or the memory's own once the text is dropped; never the questions asked); the prior
    and raw rules need no held-out scoring."""
    heldout = heldout_pairs(memory.notes()) if rule in ("heldout", "balanced") else None
    return rule_thresholds(reader.score, heldout)[rule]


def ask(
    model,
    tokenizer: PreTrainedTokenizerBase,
    memory: UserMemory,
    questions: list[str],
    readout: str | None = None,
    rule: str | None = None,
) -> list[Answer]:
    """Yes/no answers from a user's memory: `readout` (default: the memory's, `default_readout`)
    reads it, `rule` (default: `main_rule` for the readout and the memory's form) sets the threshold
    from the teacher's held-out pairs, never from the questions asked. The memory read beside the
    user's stored text is the answer path's (respond.py: `AnswerConfig.memory_beside_text`)."""
    readout = readout or default_readout(memory)
    rule = _rule(rule, main_rule(readout, memory.settings().get("form")))
    reader = memory_reader(model, tokenizer, memory, readout)
    threshold = _threshold(reader, memory, rule)
    if isinstance(reader, RecallReader):  # score and closest sentence from one embedding of the questions
        scored = reader.matcher.matches(questions)
    else:
        scored = [(score, None) for score in reader.score(questions)]
    return [Answer(q, "yes" if s > threshold else "no", s - threshold, e) for q, (s, e) in zip(questions, scored)]


def rule_thresholds(score: Callable[[list[str]], list[float]], heldout: list[QAPair] | None = None) -> dict[str, float]:
    """The score threshold of each decision rule (evaluate/run.py: DECISION_RULES) for one way of
    scoring questions. `heldout` (the teacher's held-out reworded pairs) adds the heldout rule (a
    fitted threshold) and the balanced rule (their median score: they are half yes by construction)."""
    thresholds = {"prior": score([CONTENT_FREE_QUESTION])[0], "raw": 0.0}
    if heldout is not None:
        scores = score([p.question for p in heldout])
        thresholds["heldout"] = fit_threshold(scores, [p.label for p in heldout])
        thresholds["balanced"] = statistics.median(scores) if scores else 0.0
    return thresholds
