"""The LoCoMo experiment's curves: the memory scored after each session it learns (the forgetting
curve), and the methods that read the text scored on the sessions so far (the scale curve)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from paramem.augment.teachers import make_teacher
from paramem.evaluate.experiment_config import USER, ExperimentConfig
from paramem.evaluate.locomo import LocomoBenchmark
from paramem.evaluate.run import (
    evaluate_yes_no,
    fitting_conversations,
)
from paramem.lifecycle.remember import remember
from paramem.model.compute import release_freed_memory
from paramem.read.loading import load_memory
from paramem.read.readers import TEXT_RULE, ask


def learn_with_curve(
    bench: LocomoBenchmark,
    config: ExperimentConfig,
    home: Path,
    results: dict,
    save: Callable[[], None],
    on_step: Callable[[str], None],
) -> None:
    """Learn session after session; after each, accuracy on every learned session's probes, read as
    the main table reads the memory (log-odds, under the rule of its form: `readers.main_rule`)."""

    teacher = make_teacher(config.teacher)
    remember_config = config.remember
    curve = results.setdefault("curve", [])  # curve[j][i]: session i's accuracy after learning j+1 sessions
    resident = results.setdefault("resident_gb", {})  # the process's memory after each session, by session
    for position, conversation in enumerate(bench.conversations):
        on_step(f"learning {conversation.id} ({position + 1}/{len(bench.conversations)})")
        remember(USER, [conversation], teacher, remember_config, home)
        if position < len(curve):
            continue
        model, tokenizer, memory = load_memory(USER, home)
        learned = {c.id for c in bench.conversations[: position + 1]}
        probes = [p for p in bench.probes if p.conversation in learned]
        answers = ask(model, tokenizer, memory, [p.question for p in probes], readout="log-odds")
        # An answer's margin is its score minus the rule's threshold, so it is read at 0.
        scored = [
            {"score": a.margin, "conversation": p.conversation, "answer": p.answer} for a, p in zip(answers, probes)
        ]
        accuracy = session_accuracies(scored, 0.0)
        curve.append({c.id: accuracy[c.id] for c in bench.conversations[: position + 1]})  # in learning order
        del model, tokenizer, memory
        freed = release_freed_memory()
        resident[conversation.id] = None if freed is None else round(freed / 1e9, 2)
        save()


def session_accuracies(predictions: list[dict], threshold: float) -> dict[str, float]:
    """Each session's yes/no accuracy when a method's scored probes are read at `threshold`."""
    right: dict[str, list[bool]] = {}
    for p in predictions:
        said = "yes" if p["score"] > threshold else "no"
        right.setdefault(p["conversation"], []).append(said == p["answer"])
    return {session: sum(r) / len(r) for session, r in right.items()}


def text_curve(
    bench: LocomoBenchmark,
    config: ExperimentConfig,
    home: Path,
    results: dict,
    save: Callable[[], None],
    on_step: Callable[[str], None],
) -> None:
    """The scale curve of the methods that read the text: after every `curve_every` sessions (and
    the last), each session's accuracy (`readers.TEXT_RULE`) when only the sessions so far can be read, with
    the prompt's length, the seconds per answer and, for context, how many sessions still fit."""

    if not config.curve_methods:
        return
    model, tokenizer, _ = load_memory(USER, home)
    points = results.setdefault("text_curve", [])
    total = len(bench.conversations)
    for learned in sorted({*range(config.curve_every, total + 1, config.curve_every), total}):
        if any(point["learned"] == learned for point in points):
            continue
        on_step(f"scale curve: {', '.join(config.curve_methods)} over {learned} sessions")
        sessions = bench.conversations[:learned]
        probes = [p for p in bench.probes if p.conversation in {c.id for c in sessions}]
        scored = evaluate_yes_no(model, tokenizer, probes, config.curve_methods, sessions, retrieval=config.retrieval)
        point = {"learned": learned, "methods": {}}
        for method in scored:
            point["methods"][method.method] = {
                "accuracy": session_accuracies(method.predictions, method.thresholds[TEXT_RULE]),
                "prompt_tokens": method.prompt_tokens,
                "seconds_per_answer": method.seconds / len(probes),
            }
        if "context" in point["methods"]:
            point["methods"]["context"]["sessions_read"] = len(fitting_conversations(tokenizer, sessions))
        points.append(point)
        save()
