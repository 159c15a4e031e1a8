"""Run yes/no probes through several methods with one base model and one decision rule."""

from __future__ import annotations

import json
import platform
import subprocess
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from paramem.augment.pairs import QAPair
from paramem.data.conversations import Conversation
from paramem.data.notes import Notes
from paramem.evaluate.probes import Probe
from paramem.files import write_atomic
from paramem.metrics.yes_no import YesNoMetrics, ranking_auc, ranking_auc_interval, yes_no_metrics
from paramem.model.compute import cpu_info
from paramem.model.prompts import SYSTEM_PROMPT
from paramem.model.scoring import LogOddsReader, Reader
from paramem.read.readers import (
    HYBRID_RULE,
    MAIN_RULE,
    READOUTS,
    TEXT_RULE,
    RecallReader,
    main_rule,
    rule_thresholds,
)
from paramem.read.recall import RecallConfig, recollect
from paramem.read.respond import Responder
from paramem.read.retrieval import (
    HYBRID_RETRIEVER,
    TEXT_K,
    TEXT_RETRIEVER,
    RetrievalConfig,
    note_passages,
    retrieval_systems,
)

# none     the base model alone (the adapter switched off)
# memory   the base model with the user's adapter, asked directly
# context  the base model with the raw conversations pasted into the prompt, most recent first
#          (MiLP's text-prompt baseline)
# bm25     the base model with the top-k BM25 passages of the conversations in the prompt (PLUM's RAG)
# dense    the same with all-MiniLM-L6-v2 embeddings instead of BM25
# fused    the same with BM25's and dense's rankings fused by reciprocal rank
# hybrid   the user's memory and the passages of retrieval.HYBRID_RETRIEVER together
# notes    mem0-style: the text side's retriever over the teacher's facts (the stored notes) alone
# text     the text side as shipped: TEXT_RETRIEVER's TEXT_K passages (whatever --k says)
# paramem  the answer path as shipped (read/respond.py), whatever it becomes: `paramem ask`'s answers
# The names text and paramem stay, so runs compare across versions. Every method but none and memory
# needs the conversations.
METHODS = ("none", "memory", "context", "bm25", "dense", "fused", "hybrid", "notes", "text", "paramem")
ADAPTER_METHODS = ("memory", "hybrid", "paramem")  # paramem switches the adapter itself
TEXT_METHODS = ("context", "bm25", "dense", "fused", "hybrid", "text", "paramem")  # these read the conversations
CONTEXT_TOKENS = 6000  # prompt budget of the context method, in tokens

RECALL_METHODS = ("none", "memory", "context")  # the methods the recall readout can read (readers.py)


@dataclass
class MethodResult:
    method: str
    metrics: dict[str, YesNoMetrics]  # by decision rule
    thresholds: dict[str, float]  # the log-odds threshold each rule used
    seconds: float  # all probes
    prompt_tokens: int  # mean prompt length per probe
    predictions: list[dict]
    readout: str = "log-odds"
    recollections: list[str] | None = None  # what the model recalled (recall readout, none and memory)
    threshold_seconds: float | None = None  # fitting the rules' thresholds (the held-out pairs read too)
    main_rule: str | None = None  # the rule the method ships with: its own accuracy is under this one

    @cached_property  # a thousand bootstrap resamples: computed once, for the JSON and the printed table
    def auc(self) -> tuple[float, tuple[float, float]]:
        """Ranking AUC of the scores over the probes, with its 95% interval (no decision rule)."""
        gold = [p["answer"] for p in self.predictions]
        scores = [p["score"] if "score" in p else p["log_odds"] for p in self.predictions]  # older files: log_odds
        return ranking_auc(gold, scores), ranking_auc_interval(gold, scores)

    def to_dict(self) -> dict:
        auc, interval = self.auc
        return {
            "method": self.method,
            "readout": self.readout,
            "main_rule": self.main_rule,
            "metrics": {rule: m.to_dict() for rule, m in self.metrics.items()},
            "auc": round(auc, 4),
            "auc_interval": [round(v, 4) for v in interval],
            "thresholds": {rule: round(t, 4) for rule, t in self.thresholds.items()},
            "seconds": round(self.seconds, 2),
            "threshold_seconds": None if self.threshold_seconds is None else round(self.threshold_seconds, 2),
            "prompt_tokens": self.prompt_tokens,
            "predictions": self.predictions,
            **({"recollections": self.recollections} if self.recollections is not None else {}),
        }

    @classmethod
    def from_dict(cls, saved: dict) -> MethodResult:
        metrics = {rule: YesNoMetrics.from_dict(m) for rule, m in saved["metrics"].items()}
        return cls(
            saved["method"],
            metrics,
            saved["thresholds"],
            saved["seconds"],
            saved["prompt_tokens"],
            saved["predictions"],
            saved.get("readout", "log-odds"),
            saved.get("recollections"),
            saved.get("threshold_seconds"),
            saved.get("main_rule"),
        )


def fitting_conversations(tokenizer, conversations: list[Conversation], budget: int = CONTEXT_TOKENS) -> list[str]:
    """The texts of as many conversations as fit `budget` tokens, most recent first: what the context
    method can read (the older ones are cut)."""
    parts, used = [], 0
    for conversation in reversed(conversations):
        text = conversation.text
        cost = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        if used + cost > budget:
            break
        parts.append(text)
        used += cost
    return parts


def context_prompt(tokenizer, conversations: list[Conversation], budget: int = CONTEXT_TOKENS) -> str:
    """As many conversations as fit `budget` tokens, most recent first."""
    parts = fitting_conversations(tokenizer, conversations, budget)
    return f"{SYSTEM_PROMPT}\n\nPast conversations with this user, most recent first:\n\n" + "\n\n".join(parts)


def system_prompts(
    method: str,
    tokenizer,
    conversations: list[Conversation] | None,
    retrieval: RetrievalConfig,
    notes: list[Notes] | None = None,
) -> Callable[[list[str]], list[str]]:
    """For a method, the function giving each question its system prompt."""
    if method in ("none", "memory"):
        return lambda questions: [SYSTEM_PROMPT] * len(questions)
    if method == "notes":
        if not notes:
            raise ValueError("the notes method needs the teacher's notes")
        return retrieval_systems(TEXT_RETRIEVER, [], RetrievalConfig(k=TEXT_K), note_passages(notes))
    if not conversations:
        raise ValueError(f"the {method} method needs the conversations")
    if method == "context":
        prompt = context_prompt(tokenizer, conversations)
        return lambda questions: [prompt] * len(questions)
    if method == "text":
        return retrieval_systems(TEXT_RETRIEVER, conversations, RetrievalConfig(k=TEXT_K))
    return retrieval_systems(HYBRID_RETRIEVER if method == "hybrid" else method, conversations, retrieval)


def evaluate_yes_no(
    model,
    tokenizer,
    probes: list[Probe],
    methods: list[str],
    conversations: list[Conversation] | None = None,
    heldout: list[QAPair] | None = None,
    retrieval: RetrievalConfig | None = None,
    readout: str = "log-odds",
    cues: list[str] | None = None,
    recall: RecallConfig | None = None,
    form: str | None = None,
    notes: list[Notes] | None = None,
) -> list[MethodResult]:
    """`model` is a PeftModel holding the user's adapter; methods without memory switch it off.
    `heldout` (the teacher's held-out reworded pairs) fits each method's `heldout` threshold. The prior
    of every method is its own score on a content-free question, asked the same way. The recall
    readout needs `cues`, one per learned conversation (`recall.recall_cues`). `form` (the memory's)
    names the rule the memory method ships with; `notes` (the teacher's) are what the notes method
    retrieves from."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(unknown)} (available: {', '.join(METHODS)})")
    if readout not in READOUTS:
        raise ValueError(f"unknown readout {readout!r} (available: {', '.join(READOUTS)})")
    if readout == "recall":
        unreadable = [m for m in methods if m not in RECALL_METHODS]
        if unreadable:
            raise ValueError(f"the recall readout reads {', '.join(RECALL_METHODS)}, not {', '.join(unreadable)}")
        if not cues and set(methods) & {"none", "memory"}:
            raise ValueError("the recall readout needs one cue per learned conversation")
    retrieval, recall = retrieval or RetrievalConfig(), recall or RecallConfig()
    gold = [p.answer for p in probes]
    questions = [p.question for p in probes]
    results = []
    for method in methods:
        start = time.perf_counter()
        with nullcontext() if method in ADAPTER_METHODS else model.disable_adapter():
            reader = method_reader(method, readout, model, tokenizer, conversations, retrieval, cues, recall, notes)
            scores = reader.score(questions)
            seconds = time.perf_counter() - start
            thresholds = rule_thresholds(reader.score, heldout or None)
            threshold_seconds = time.perf_counter() - start - seconds
            prompt_tokens = reader.prompt_tokens(questions)
        metrics = {
            rule: yes_no_metrics(gold, ["yes" if s > t else "no" for s in scores]) for rule, t in thresholds.items()
        }
        predictions = [
            {"conversation": p.conversation, "question": p.question, "answer": p.answer, "score": round(s, 4)}
            for p, s in zip(probes, scores)
        ]
        recalled = getattr(reader, "recollections", None)
        shipped = reader.responder.rule if method == "paramem" else shipped_rule(method, readout, form)
        results.append(
            MethodResult(
                method,
                metrics,
                thresholds,
                seconds,
                prompt_tokens,
                predictions,
                readout,
                recalled,
                threshold_seconds,
                shipped,
            )
        )
    return results


def shipped_rule(method: str, readout: str, form: str | None = None) -> str:
    """The decision rule a method is read under where paramem uses it (readers.py)."""
    if readout == "recall":
        return MAIN_RULE["recall"]
    if method == "memory":
        return main_rule(readout, form)
    return HYBRID_RULE if method == "hybrid" else TEXT_RULE


def method_reader(
    method: str,
    readout: str,
    model,
    tokenizer,
    conversations: list[Conversation] | None,
    retrieval: RetrievalConfig,
    cues: list | None,
    recall: RecallConfig,
    notes: list[Notes] | None = None,
) -> Reader:
    """How one method is read: by recall (none and memory recall from the model; context matches the
    raw conversations) or by the answer token's log-odds, with the method's system prompts."""
    if readout == "recall":
        if method == "context":
            if not conversations:
                raise ValueError("the context method needs the conversations")
            return RecallReader(
                [m.content for c in conversations for m in c.messages], recall.threshold, recalled=False
            )
        return RecallReader(recollect(model, tokenizer, cues, recall), recall.threshold)
    if method == "paramem":
        if not conversations:
            raise ValueError("the paramem method needs the conversations")
        return Responder(model, tokenizer, conversations).yes_no_reader()
    return LogOddsReader(model, tokenizer, system_prompts(method, tokenizer, conversations, retrieval, notes))


def write_json(results: list[MethodResult], path: str | Path, meta: dict) -> None:
    payload = {**meta, "methods": [r.to_dict() for r in results]}
    write_atomic(Path(path), json.dumps(payload, indent=1))


def write_results(out: Path, result: dict) -> None:
    """A benchmark's results file, its folder made if missing, and a line saying where it went."""
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, json.dumps(result, indent=1))
    print(f"wrote {out}")


def run_meta(command: list[str], base_model: str, data: dict, dtype: str | None = None) -> dict:
    """What every results file records: command, commit, base model and its dtype, data, date, and the
    machine with its CPU's bf16 flags (speeds and even the dtype chosen depend on them)."""

    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
            ).stdout.strip()
            or None
        )
    except OSError:
        commit = None
    return {
        "command": " ".join(command),
        "git_commit": commit,
        "base_model": base_model,
        "dtype": dtype,
        "data": data,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"platform": platform.platform(), "cpu": cpu_info()},
    }
