"""Scoring generated replies against the gold ones: ROUGE-1/L and Persona-F1 (MiLP's metrics).

Persona-F1 (Ma et al., 2021, as MiLP uses it) is the unigram F1 between a reply and a person's facts:
the sets of their words, case-folded, in any script, without scikit-learn's English stop words. It
asks whether a reply uses what is known about the person, whatever the gold reply says.
"""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass

from rouge_score import rouge_scorer
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

_WORD = re.compile(r"\w+")
_SCORER = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)


def persona_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.casefold()) if w not in ENGLISH_STOP_WORDS}


def persona_f1(reply: str, facts: list[str]) -> float:
    """Unigram F1 between the reply's words and the facts' words (stop words left out)."""
    said, known = persona_words(reply), persona_words(" ".join(facts))
    shared = len(said & known)
    if shared == 0:
        return 0.0
    precision, recall = shared / len(said), shared / len(known)
    return 2 * precision * recall / (precision + recall)


def rouge(reply: str, gold: str) -> tuple[float, float]:
    """(ROUGE-1 F, ROUGE-L F) of a reply against the gold reply, Porter-stemmed as in the original."""
    scores = _SCORER.score(gold, reply)
    return scores["rouge1"].fmeasure, scores["rougeL"].fmeasure


@dataclass(frozen=True)
class ReplyScores:
    rouge1: float
    rouge_l: float
    persona_f1: float  # against the facts of the person whose turns are generated
    partner_persona_f1: float | None = None  # against the other person's facts, where the data has them


def score_reply(reply: str, gold: str, facts: list[str], partner_facts: list[str] | None = None) -> ReplyScores:
    r1, rl = rouge(reply, gold)
    partner = persona_f1(reply, partner_facts) if partner_facts else None
    return ReplyScores(r1, rl, persona_f1(reply, facts), partner)


def mean_scores(scores: list[ReplyScores]) -> dict[str, float | None]:
    """Each metric's mean over replies (None where no reply has it)."""
    out: dict[str, float | None] = {}
    for name in ("rouge1", "rouge_l", "persona_f1", "partner_persona_f1"):
        values = [getattr(s, name) for s in scores if getattr(s, name) is not None]
        out[name] = statistics.fmean(values) if values else None
    return out
