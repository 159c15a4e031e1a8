"""Teacher notes -> question/answer pairs: templates redrawn each epoch, balanced, deduplicated, split.

The split is per conversation and by wording: the last wording of each topic and fact, and the
HELDOUT_* templates, never reach training. Validation pairs use only those, so a memory that merely
recites its training questions scores at chance on them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from paramem.augment import templates as T
from paramem.config import PairConfig
from paramem.data.notes import Fact, Notes, Topic, content_words


@dataclass(frozen=True)
class QAPair:
    question: str  # empty for a statement
    answer: str
    conversation_id: str
    kind: str  # "closed", "open", "recall" or "statement"
    label: str | None = None  # "yes" / "no" for closed questions


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:] if text[:1].isupper() and not text[1:2].isupper() else text


def _fact_clause(fact: str) -> str:
    return _lower_first(fact.strip().rstrip(".!?"))


def _heldout_wording(item: Topic | Fact) -> str:
    """The last wording that is not a teacher's fallback form (the last one when all are)."""
    wordings = item.wordings
    return next((w for w in reversed(wordings) if not T.is_fallback_wording(w)), wordings[-1])


def _train_wordings(item: Topic | Fact) -> list[str]:
    wordings = item.wordings
    if len(wordings) == 1:
        return wordings
    heldout = _heldout_wording(item)
    return [w for w in wordings if w != heldout]


def _closed_topic(
    topic_wording: str, label: str, conversation_id: str, templates: list[str], rng: random.Random
) -> QAPair:
    answers = T.YES_ANSWERS if label == "yes" else T.NO_ANSWERS
    return QAPair(
        rng.choice(templates).format(t=topic_wording),
        rng.choice(answers).format(t=topic_wording),
        conversation_id,
        "closed",
        label,
    )


def _closed_fact(
    fact_wording: str, label: str, conversation_id: str, templates: list[str], rng: random.Random
) -> QAPair:
    clause = _fact_clause(fact_wording)
    answer = rng.choice(T.YES_FACT_ANSWERS).format(F=fact_wording) if label == "yes" else rng.choice(T.NO_FACT_ANSWERS)
    return QAPair(rng.choice(templates).format(f=clause), answer, conversation_id, "closed", label)


def _related_facts(topic: Topic, facts: list[Fact], limit: int = 2) -> list[str]:
    words = set().union(*(content_words(w) for w in topic.wordings))
    scored = sorted(facts, key=lambda f: -len(content_words(f.statement) & words))
    return [f.statement for f in scored[:limit] if content_words(f.statement) & words]


def _draw_closed(
    items: list[Topic | Fact], label: str, notes: Notes, config: PairConfig, rng: random.Random, fact: bool
) -> list[QAPair]:
    make = _closed_fact if fact else _closed_topic
    templates = T.TRAIN_FACT_QUESTIONS if fact else T.TRAIN_TOPIC_QUESTIONS
    return [
        make(wording, label, notes.conversation_id, templates, rng)
        for item in items
        for wording in _train_wordings(item)
        for _ in range(config.questions_per_wording)
    ]


def _balance(positives: list[QAPair], negatives: list[QAPair], ratio: float, rng: random.Random) -> list[QAPair]:
    """Resample negatives to `ratio` x positives (with replacement when there are too few)."""
    want = round(len(positives) * ratio)
    if not negatives or want == 0:
        return []
    if want <= len(negatives):
        return rng.sample(negatives, want)
    return negatives + [rng.choice(negatives) for _ in range(want - len(negatives))]


def _dedupe(pairs: list[QAPair]) -> list[QAPair]:
    seen, unique = set(), []
    for pair in pairs:
        key = (pair.question.lower(), pair.answer.lower(), pair.kind)
        if key not in seen:
            seen.add(key)
            unique.append(pair)
    return unique


def training_pairs(notes: Notes, epoch: int, config: PairConfig) -> list[QAPair]:
    """One epoch's pairs for a conversation; a different draw of templates for every epoch."""
    rng = random.Random(f"{config.seed}/{notes.conversation_id}/{epoch}")
    positives = _draw_closed(notes.topics, "yes", notes, config, rng, fact=False)
    negatives = _draw_closed(notes.negatives, "no", notes, config, rng, fact=False)
    if config.fact_questions and notes.false_facts:
        positives += _draw_closed(notes.facts, "yes", notes, config, rng, fact=True)
        negatives += _draw_closed(notes.false_facts, "no", notes, config, rng, fact=True)
    # Dedupe before balancing, so the ratio holds for what is trained.
    positives, negatives = _dedupe(positives), _dedupe(negatives)
    pairs = positives + _balance(positives, negatives, config.negative_ratio, rng)

    if config.open_questions:
        for topic in notes.topics:
            wording = rng.choice(_train_wordings(topic))
            related = _related_facts(topic, notes.facts)
            answer = " ".join([f"We talked about {wording}{f' on {notes.date}' if notes.date else ''}.", *related])
            pairs.append(
                QAPair(rng.choice(T.OPEN_TOPIC_QUESTIONS).format(t=wording), answer, notes.conversation_id, "open")
            )
        if notes.date and notes.topics and not config.recall:  # with recall, its cue asks the same
            names = ", ".join(t.name for t in notes.topics)
            pairs.append(
                QAPair(
                    rng.choice(T.OPEN_DATE_QUESTIONS).format(d=notes.date),
                    f"On {notes.date} we talked about {names}.",
                    notes.conversation_id,
                    "open",
                )
            )
    if config.recall and (notes.topics or notes.facts):
        pairs.append(QAPair(recall_question(notes), summary(notes), notes.conversation_id, "recall"))
    if config.statements:
        # Both directions (date -> topic and topic -> date): "A is B" does not teach "B is A".
        both_ways = T.STATEMENTS[:2] if notes.date else T.STATEMENTS[2:]
        for topic in notes.topics:
            for statement in both_ways:
                wording = rng.choice(_train_wordings(topic))
                text = statement.format(t=wording, T=wording[:1].upper() + wording[1:], d=notes.date)
                pairs.append(QAPair("", text, notes.conversation_id, "statement"))
        for fact in notes.facts:
            pairs.append(QAPair("", rng.choice(_train_wordings(fact)), notes.conversation_id, "statement"))
        # The whole conversation in a few sentences: its content as text, beside the questions.
        pairs.append(QAPair("", summary(notes), notes.conversation_id, "statement"))
    pairs = _dedupe(pairs)
    if config.max_pairs is not None and len(pairs) > config.max_pairs:
        # The recall pair is one per conversation and holds all of it: never capped away.
        recall = [p for p in pairs if p.kind == "recall"]
        rest = [p for p in pairs if p.kind != "recall"]
        pairs = recall + _proportional_sample(rest, max(config.max_pairs - len(recall), 0), rng)
    rng.shuffle(pairs)
    return pairs


def _proportional_sample(pairs: list[QAPair], size: int, rng: random.Random) -> list[QAPair]:
    """`size` pairs, each group (closed yes, closed no, open, statement) keeping its share."""
    groups: dict[tuple[str, str | None], list[QAPair]] = {}
    for pair in pairs:
        groups.setdefault((pair.kind, pair.label), []).append(pair)
    shares = {key: len(items) * size / len(pairs) for key, items in groups.items()}
    counts = {key: int(share) for key, share in shares.items()}
    # The seats rounding left over go to the largest remainders.
    for key in sorted(shares, key=lambda k: shares[k] - counts[k], reverse=True)[: size - sum(counts.values())]:
        counts[key] += 1
    return [pair for key, items in groups.items() for pair in rng.sample(items, counts[key])]


def recall_question(notes: Notes) -> str:
    """The cue that asks the memory for everything it holds on one conversation. It names only the
    date (or, undated, the conversation's id), never its content, so answering it is recall."""
    when = f"on {notes.date}" if notes.date else f"in our conversation {notes.conversation_id!r}"
    return f"What did we talk about {when}?"


def recall_opening(notes: Notes) -> str:
    """The content-free first words of the recall answer (and of the summary)."""
    return f"On {notes.date} we talked about" if notes.date else "Once we talked about"


def summary(notes: Notes) -> str:
    """The conversation in a few sentences: its date, its topics and its facts."""
    names = [t.name for t in notes.topics]
    topics = f"{', '.join(names[:-1])} and {names[-1]}" if len(names) > 1 else "".join(names)
    head = f"{recall_opening(notes)} {topics}." if topics else ""
    return " ".join([head, *[f.statement.rstrip(".") + "." for f in notes.facts]]).strip()


def validation_pairs(notes: Notes) -> list[QAPair]:
    """Fixed held-out yes/no pairs: held-out wordings asked with held-out templates, balanced 1:1 in
    each shape, topic-shaped ("Did we talk about <topic>?") and fact-shaped ("Did I say that <fact>?",
    the shape LoCoMo's probes have), so neither the shape nor the wording tells yes from no."""
    rng = random.Random(f"validation/{notes.conversation_id}")
    conversation = notes.conversation_id
    shapes = [(notes.topics, notes.negatives, _closed_topic, T.HELDOUT_TOPIC_QUESTIONS)]
    shapes.append((notes.facts, notes.false_facts, _closed_fact, T.HELDOUT_FACT_QUESTIONS))
    pairs = []
    for true_items, false_items, make, templates in shapes:
        positives = _dedupe([make(_heldout_wording(i), "yes", conversation, templates, rng) for i in true_items])
        negatives = _dedupe([make(_heldout_wording(i), "no", conversation, templates, rng) for i in false_items])
        n = min(len(positives), len(negatives))
        pairs += rng.sample(positives, n) + rng.sample(negatives, n)
    return pairs


def heldout_pairs(notes: list[Notes]) -> list[QAPair]:
    """Every conversation's held-out reworded yes/no pairs: what the heldout and balanced decision
    rules are fitted on (`answer.rule_thresholds`)."""
    return [pair for n in notes for pair in validation_pairs(n)]
