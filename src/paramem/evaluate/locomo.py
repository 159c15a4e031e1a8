"""LoCoMo as PLUM's setting: one sample's dated sessions learned in date order, probed with questions
built from LoCoMo's own annotations, never from the teacher that made the training pairs.

  yes  an `observation` fact of a learned session, asked "Did we talk about the fact that <fact>?"
  no   an observation fact of another LoCoMo sample, its two speakers renamed to this sample's, and
       checked to be absent from every learned session (a near miss about the same two people)
  open LoCoMo's questions of categories 1-4 whose evidence lies in the learned sessions, scored with
       LoCoMo's token F1; category 5 (adversarial, not answerable) is correct when the answer says it
       was not mentioned

The adversarial items have no yes/no form that keeps their meaning (they ask about the wrong person),
so they are scored as open questions only.

Samples 0-3 are for development: every design choice, threshold and rule is tuned on them. Samples
4-7 are for the report only, never looked at while tuning (`split_of`).
"""

from __future__ import annotations

import json
import random
import re
import string
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from paramem.augment.templates import fact_clause
from paramem.data.conversations import Conversation
from paramem.data.formats import load_locomo
from paramem.data.notes import content_words, is_absent
from paramem.errors import InputError
from paramem.evaluate.probes import Probe

YES_TEMPLATE = "Did we talk about the fact that {fact}?"
NOT_MENTIONED = re.compile(
    r"\b(not (been )?mentioned|no (information|mention)|not (discussed|talked about)|"
    r"never (been )?(mentioned|discussed|talked about|said)|"
    r"did not (say|mention|talk)|didn't (say|mention|talk)|don't know|do not know|"
    r"not sure|cannot (tell|say)|can't (tell|say))\b",
    re.IGNORECASE,
)


DEV_SAMPLES = (0, 1, 2, 3)
REPORT_SAMPLES = (4, 5, 6, 7)


def split_of(sample: int) -> str:
    """ "dev" for the samples tuned on, "report" for the ones figures are quoted from."""
    return "dev" if sample in DEV_SAMPLES else "report" if sample in REPORT_SAMPLES else "other"


@dataclass(frozen=True)
class OpenQuestion:
    conversation: str  # the learned session holding the (last) evidence
    question: str
    answer: str  # gold answer; empty for category 5
    category: int  # 1 multi-hop, 2 temporal, 3 open-domain, 4 single-hop, 5 adversarial


@dataclass
class LocomoBenchmark:
    sample_id: str
    speakers: tuple[str, str]
    conversations: list[Conversation]  # the learned sessions, in date order
    probes: list[Probe]  # yes/no, balanced per session
    open_questions: list[OpenQuestion]


def _observations(sample: dict, session: int) -> list[str]:
    raw = (sample.get("observation") or {}).get(f"session_{session}_observation") or {}
    return [item[0] for facts in raw.values() for item in facts if isinstance(item, list) and item]


def _rename(fact: str, source: tuple[str, str], target: tuple[str, str]) -> str:
    for old, new in zip(source, target):
        fact = re.sub(rf"\b{re.escape(old)}\b", new, fact)
    return fact


_PRONOUNS = {
    "he": re.compile(r"\b(he|his|him|himself)\b", re.I),
    "she": re.compile(r"\b(she|her|hers|herself)\b", re.I),
}


def speaker_pronouns(sample: dict) -> dict[str, str | None]:
    """Each speaker's pronoun ("he" or "she"), read from the observations that name that speaker
    alone (the most used one wins), or None when they use neither."""
    names = (sample["conversation"]["speaker_a"], sample["conversation"]["speaker_b"])
    facts = [f for key in sample.get("observation") or {} for f in _observations(sample, _session_number(key))]
    out = {}
    for name, other in (names, names[::-1]):
        alone = [f for f in facts if re.search(rf"\b{re.escape(name)}\b", f) and other not in f]
        counts = {p: sum(len(pattern.findall(f)) for f in alone) for p, pattern in _PRONOUNS.items()}
        out[name] = max(counts, key=counts.get) if any(counts.values()) else None
    return out


def keeps_pronouns(fact: str, source: dict[str, str | None], target: dict[str, str | None]) -> bool:
    """Whether `fact`, renamed from the `source` speakers to the `target` ones (each with its pronoun,
    in the same order), still reads right: a fact with "he" or "she" in it is kept only when every
    speaker it names is known to use the same pronoun as the one it is renamed to ("Melanie ... his
    workplace" is dropped)."""
    if not any(pattern.search(fact) for pattern in _PRONOUNS.values()):
        return True
    named = [(old, new) for old, new in zip(source, target) if re.search(rf"\b{re.escape(old)}\b", fact)]
    return bool(named) and all(source[old] is not None and source[old] == target[new] for old, new in named)


def _session_number(key: str) -> int:
    return int(re.sub(r"\D", "", key) or 0)


def _evidence_sessions(evidence: list[str]) -> set[int]:
    return {int(m.group(1)) for e in evidence for m in [re.match(r"D(\d+):", str(e))] if m}


def build_locomo(
    path: str | Path, sample: int = 0, sessions: int | None = 6, probes_per_session: int = 8, seed: int = 0
) -> LocomoBenchmark:
    """The first `sessions` sessions (date order) of sample number `sample`, with balanced probes."""
    path = Path(path)
    samples = json.loads(path.read_text(encoding="utf-8"))
    if not 0 <= sample < len(samples):
        raise InputError(f"no sample {sample} (the file has {len(samples)})", path=path)
    chosen = samples[sample]
    sample_id = str(chosen.get("sample_id", sample))
    conversations = [c for c in load_locomo(path) if c.metadata["sample_id"] == sample_id][:sessions]
    speakers = (chosen["conversation"]["speaker_a"], chosen["conversation"]["speaker_b"])
    learned_words = content_words(" ".join(c.text for c in conversations))
    rng = random.Random(seed)

    # Renamed "no" facts keep only pronouns that fit the speaker they now name.
    pronouns = speaker_pronouns(chosen)
    others = []
    for index, other in enumerate(samples):
        if index == sample:
            continue
        names = (other["conversation"]["speaker_a"], other["conversation"]["speaker_b"])
        theirs = speaker_pronouns(other)
        for key in sorted(other.get("observation") or {}):
            facts = _observations(other, _session_number(key))
            others += [_rename(f, names, speakers) for f in facts if keeps_pronouns(f, theirs, pronouns)]
    others = [f for f in dict.fromkeys(others) if is_absent(f, learned_words)]
    rng.shuffle(others)

    probes: list[Probe] = []
    half = probes_per_session // 2
    for conversation in conversations:
        facts = _observations(chosen, conversation.metadata["session"])
        for fact in rng.sample(facts, min(half, len(facts))):
            probes.append(Probe(conversation.id, YES_TEMPLATE.format(fact=fact_clause(fact)), "yes"))
        for _ in range(min(half, len(facts))):
            if others:
                probes.append(Probe(conversation.id, YES_TEMPLATE.format(fact=fact_clause(others.pop())), "no"))

    by_session = {c.metadata["session"]: c.id for c in conversations}
    open_questions = []
    for item in chosen.get("qa", []):
        evidence = _evidence_sessions(item.get("evidence") or [])
        if not evidence or not evidence <= by_session.keys():
            continue
        category = int(item.get("category", 0))
        answer = "" if category == 5 else str(item.get("answer", ""))
        open_questions.append(OpenQuestion(by_session[max(evidence)], item["question"], answer, category))
    return LocomoBenchmark(sample_id, speakers, conversations, probes, open_questions)


def never_discussed_questions(
    path: str | Path, bench: LocomoBenchmark, count: int, seed: int = 0
) -> list[OpenQuestion]:
    """Open questions about something the learned sessions never mention, for "says it does not know":
    other samples' single-hop questions (category 4), renamed to this sample's speakers as the "no"
    probes are, kept only when their pronouns still fit and at most a third of their content words
    (the speakers' names aside) occur in the learned sessions. Scored as LoCoMo scores category 5:
    right when the answer says it was not mentioned."""
    samples = json.loads(Path(path).read_text(encoding="utf-8"))
    chosen = next(s for s in samples if str(s.get("sample_id")) == bench.sample_id)
    pronouns = speaker_pronouns(chosen)
    learned_words = content_words(" ".join(c.text for c in bench.conversations))
    questions = []
    for other in samples:
        if other is chosen:
            continue
        names = (other["conversation"]["speaker_a"], other["conversation"]["speaker_b"])
        theirs = speaker_pronouns(other)
        for item in other.get("qa", []):
            if int(item.get("category", 0)) != 4 or not keeps_pronouns(item["question"], theirs, pronouns):
                continue
            if is_absent(_rename(item["question"], names, ("", "")), learned_words):
                renamed = _rename(item["question"], names, tuple(bench.speakers))
                questions.append(OpenQuestion(bench.conversations[-1].id, renamed, "", 5))
    random.Random(seed).shuffle(questions)
    return questions[:count]


def _normalize(text: str) -> list[str]:
    """LoCoMo's answer normalisation: lower case, no punctuation, no articles, words."""
    text = str(text).lower().replace(",", "")
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the|and)\b", " ", text)
    return text.split()


def token_f1(prediction: str, gold: str) -> float:
    """Token-overlap F1 of LoCoMo's scorer (its Porter stemming aside)."""
    predicted, expected = _normalize(prediction), _normalize(gold)
    common = sum((Counter(predicted) & Counter(expected)).values())
    if not common:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def open_score(question: OpenQuestion, prediction: str) -> float:
    if question.category == 5:
        return float(bool(NOT_MENTIONED.search(prediction)))
    return token_f1(prediction, question.answer)
