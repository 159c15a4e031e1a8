"""The LoCoMo experiment of PLUM, end to end, into one output folder.

  1. learn the chosen sessions one by one into a fresh memory (in `OUT/home`), and after each one
     score the memory on the probes of every session learned so far (the forgetting curve); with
     `curve_methods`, the methods that read the text (context, dense, ...) are scored the same way
     every `curve_every` sessions, reading only the sessions so far (the scale curve);
  2. score every method side by side on all yes/no probes (same base model, same probes, same rules);
  3. answer LoCoMo's open questions with each method and score them with LoCoMo's token F1;
  4. MMLU and ARC-Challenge with and without the adapter (capability retention);
  5. write results.json, report.md and PNG plots.

Every step saves `results.json` as it finishes, and a rerun with the same folder skips what is there
(sessions learned, curve points, finished steps), so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, replace
from pathlib import Path

from paramem.augment.pairs import heldout_pairs
from paramem.config import RememberConfig
from paramem.evaluate.capability import choice_accuracy, load_arc, load_mmlu
from paramem.evaluate.curves import learn_with_curve, text_curve
from paramem.evaluate.experiment_config import USER, ExperimentConfig
from paramem.evaluate.locomo import LocomoBenchmark, OpenQuestion, build_locomo, open_score, split_of
from paramem.evaluate.report import write_report
from paramem.evaluate.run import (
    ADAPTER_METHODS,
    evaluate_yes_no,
    run_meta,
    system_prompts,
)
from paramem.files import write_atomic
from paramem.read.answer import answer_many
from paramem.read.loading import load_memory
from paramem.read.respond import Responder
from paramem.store.user import UserMemory


def _save(results: dict, out: Path) -> None:
    write_atomic(out / "results.json", json.dumps(results, indent=1))


def closed_only(remember: RememberConfig) -> RememberConfig:
    """PLUM's closed-questions-only ablation of a learning setting: no open answers of any kind."""
    pairs = replace(remember.train.pairs, open_questions=False, recall=False)
    return replace(remember, train=replace(remember.train, pairs=pairs))


def compare_methods(bench: LocomoBenchmark, config: ExperimentConfig, home: Path) -> dict:
    model, tokenizer, memory = load_memory(USER, home)
    methods = evaluate_yes_no(
        model,
        tokenizer,
        bench.probes,
        config.methods,
        bench.conversations,
        heldout_pairs(memory.notes()),
        config.retrieval,
        form=memory.form,
        notes=memory.notes(),
    )
    return {r.method: r.to_dict() for r in methods}


def answer_open_questions(bench: LocomoBenchmark, config: ExperimentConfig, home: Path) -> dict:
    """Each method answers the same open questions by greedy generation; mean score per category."""

    model, tokenizer, memory = load_memory(USER, home)
    questions = spread_over_categories(bench.open_questions, config.open_questions)
    out = {}
    asked = [q.question for q in questions]
    for method in config.open_methods:
        start = time.perf_counter()
        if method == "paramem":  # the answer path: it may abstain, and it switches the memory itself
            replies = [r.answer for r in Responder(model, tokenizer, bench.conversations).respond(asked)]
        else:
            systems = system_prompts(method, tokenizer, bench.conversations, config.retrieval, memory.notes())(asked)
            with nullcontext() if method in ADAPTER_METHODS else model.disable_adapter():
                replies = answer_many(model, tokenizer, asked, systems, 48)
        rows = [
            {
                "question": question.question,
                "gold": question.answer,
                "category": question.category,
                "answer": reply,
                "score": round(open_score(question, reply), 4),
            }
            for question, reply in zip(questions, replies)
        ]
        by_category: dict[str, list[float]] = {}
        for row in rows:
            by_category.setdefault(str(row["category"]), []).append(row["score"])
        answerable = [r["score"] for r in rows if r["category"] != 5]
        out[method] = {
            "f1": sum(answerable) / len(answerable) if answerable else None,
            "by_category": {c: sum(v) / len(v) for c, v in sorted(by_category.items())},
            "n": len(rows),
            "seconds": round(time.perf_counter() - start, 1),
            "answers": rows,
        }
    return out


def spread_over_categories(questions: list[OpenQuestion], limit: int | None) -> list[OpenQuestion]:
    """`limit` questions taken in turn from each category (LoCoMo lists them by session, so its first
    questions would all be of a few categories), in their original order within a category."""
    if limit is None or limit >= len(questions):
        return questions
    by_category: dict[int, list[OpenQuestion]] = {}
    for question in questions:
        by_category.setdefault(question.category, []).append(question)
    queues = [by_category[c] for c in sorted(by_category)]
    chosen: list[OpenQuestion] = []
    while len(chosen) < limit:
        for queue in queues:
            if queue and len(chosen) < limit:
                chosen.append(queue.pop(0))
    return chosen


def capability_retention(config: ExperimentConfig, home: Path) -> dict:
    model, tokenizer, _ = load_memory(USER, home)
    sets = {}
    if config.mmlu:
        sets["mmlu"] = load_mmlu(config.mmlu, config.mmlu_per_subject, config.mmlu_subjects)
    if config.arc:
        sets["arc"] = load_arc(config.arc, config.arc_items)
    out = {}
    for name, items in sets.items():
        with model.disable_adapter():
            base = choice_accuracy(model, tokenizer, items)
        if getattr(model, "prefix_tokens", None) is not None:
            # Cartridges change no weight, and these prompts carry no paramem system prompt for them
            # to be read in: the memory's score is the base model's by construction.
            out[name] = {"base": base, "memory": base, "note": "cartridges are not read outside paramem's prompt"}
            continue
        out[name] = {"base": base, "memory": choice_accuracy(model, tokenizer, items)}
    return out


def costs(bench: LocomoBenchmark, home: Path, methods: dict) -> dict:
    """Per answer: prompt tokens and latency; per user: bytes each method must keep."""

    adapter = UserMemory(USER, home).current_adapter()
    adapter_bytes = sum(f.stat().st_size for f in adapter.iterdir() if f.is_file())
    text_bytes = sum(len(c.text.encode("utf-8")) for c in bench.conversations)
    passages = sum(len(c.messages) for c in bench.conversations)
    stored = {
        "none": 0,
        "memory": adapter_bytes,
        "context": text_bytes,
        "bm25": text_bytes,
        "dense": text_bytes + passages * 384 * 4,
        "hybrid": adapter_bytes + text_bytes + passages * 384 * 4,  # the dense index too
    }
    return {
        name: {
            "prompt_tokens": m["prompt_tokens"],
            "seconds_per_answer": m["seconds"] / len(bench.probes),
            "bytes_per_user": stored[name],
        }
        for name, m in methods.items()
    }


def run_experiment(config: ExperimentConfig, out: Path, on_step: Callable[[str], None] = lambda _: None) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    home = out / "home"
    previous = json.loads((out / "results.json").read_text(encoding="utf-8")) if (out / "results.json").exists() else {}
    if previous and not same_settings(previous.get("config"), config):
        raise ValueError(f"{out} holds a run with other settings; use another folder")
    results = previous or {"config": _plain(config)}
    results.update(
        run_meta(sys.argv, config.base_model, {"locomo": config.locomo, "mmlu": config.mmlu, "arc": config.arc})
    )
    bench = build_locomo(config.locomo, config.sample, config.sessions, config.probes_per_session)
    results["benchmark"] = {
        "sample_id": bench.sample_id,
        "split": split_of(config.sample),  # dev: tuned on; report: figures are quoted from it
        "speakers": bench.speakers,
        "sessions": [c.id for c in bench.conversations],
        "probes": len(bench.probes),
        "yes": sum(p.answer == "yes" for p in bench.probes),
        "open_questions": len(bench.open_questions),
    }
    # The probes in DESIGN.md's format, so any other reader of the memory can be scored on them.
    (out / "probes.jsonl").write_text("".join(json.dumps(asdict(p)) + "\n" for p in bench.probes), encoding="utf-8")

    def save() -> None:
        _save(results, out)

    learn_with_curve(bench, config, home, results, save, on_step)
    text_curve(bench, config, home, results, save, on_step)
    steps = [("methods", lambda: compare_methods(bench, config, home))]
    if config.open_methods and config.open_questions != 0:
        steps.append(("open", lambda: answer_open_questions(bench, config, home)))
    if config.mmlu or config.arc:
        steps.append(("retention", lambda: capability_retention(config, home)))
    for name, step in steps:
        if name not in results:
            on_step(f"step: {name}")
            results[name] = step()
            save()
    results["costs"] = costs(bench, home, results["methods"])

    results["learned"] = [  # what learning each session cost, as the store recorded it
        {
            "id": r.id,
            "seconds": round(r.seconds, 1),  # the student's epochs
            "teacher_seconds": _rounded(r.teacher_seconds),  # of which:
            "teacher_prefill_seconds": _rounded(r.teacher_prefill_seconds),  # reading the session once
            "teacher_writing_seconds": _rounded(r.teacher_writing_seconds),  # writing self-study queries
            "teacher_queries": r.teacher_queries,  # the query budget spent
            "epochs": r.epochs,
            "learning_rate": r.learning_rate,
            "heldout_accuracy": r.heldout_accuracy,
        }
        for r in UserMemory(USER, home).learned()
    ]
    results["dtype"] = UserMemory(USER, home).settings().get("dtype")  # the dtype the memory learned in
    save()

    write_report(results, out)
    return results


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 1)


# Settings added with a default that differs from what runs saved before them did: such a run is
# read with this value, so that it is never taken for a run of the new default.
BEFORE_THE_SETTING = {("remember", "train", "distill_checks"): 0}


def same_settings(saved: dict | None, config: ExperimentConfig) -> bool:
    """Whether a saved run's config is `config`. A setting added since the run was saved counts as
    its default (or as what the run did, `BEFORE_THE_SETTING`), so a run resumes with newer code unless
    it asks for something the run did not do."""

    def filled(saved, defaults):  # saved, with the defaults of the keys it lacks (nested)
        if not isinstance(saved, dict) or not isinstance(defaults, dict):
            return saved
        return {key: filled(saved[key], value) if key in saved else value for key, value in defaults.items()} | {
            key: value for key, value in saved.items() if key not in defaults
        }

    if saved is None:
        return False
    defaults = _plain(ExperimentConfig(locomo=config.locomo))
    for (*parents, key), value in BEFORE_THE_SETTING.items():
        holder = defaults
        for parent in parents:
            holder = holder[parent]
        holder[key] = value
    return _effective(filled(saved, defaults)) == _effective(_plain(config))


def _effective(plain: dict) -> dict:
    """A config without the settings its objective never reads (a plum run reads no distill setting)."""
    train = plain.get("remember", {}).get("train", {})
    if train.get("objective") == "plum":
        for key in [k for k in train if k.startswith("distill_") or k == "self_study_queries"]:
            del train[key]
    return plain


def _plain(config: ExperimentConfig) -> dict:
    return json.loads(json.dumps(asdict(config)))
