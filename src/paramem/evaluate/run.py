"""Run yes/no probes through several methods with one base model and one decision rule."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from paramem.answer import YesNoScorer
from paramem.evaluate.metrics import YesNoMetrics, yes_no_metrics
from paramem.evaluate.probes import Probe

METHODS = ("memory", "none")


@dataclass
class MethodResult:
    method: str
    metrics: YesNoMetrics  # calibrated decision (log-odds minus the content-free prior), the default
    raw_metrics: YesNoMetrics  # uncalibrated: P(yes) > P(no)
    seconds: float
    predictions: list[dict]

    def to_dict(self) -> dict:
        return {"method": self.method, **self.metrics.to_dict(), "raw": self.raw_metrics.to_dict(),
                "seconds": round(self.seconds, 2), "predictions": self.predictions}


def evaluate_yes_no(model, tokenizer, probes: list[Probe], methods: list[str]) -> list[MethodResult]:
    """`model` is a PeftModel holding the user's adapter; `none` runs it with the adapter disabled."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(unknown)} (available: {', '.join(METHODS)})")
    gold = [p.answer for p in probes]
    results = []
    for method in methods:
        context = model.disable_adapter() if method == "none" else nullcontext()
        start = time.perf_counter()
        with context:
            scorer = YesNoScorer(model, tokenizer)
            prior = scorer.prior()
            scores = scorer.log_odds([p.question for p in probes])
        seconds = time.perf_counter() - start
        calibrated = ["yes" if s - prior > 0 else "no" for s in scores]
        raw = ["yes" if s > 0 else "no" for s in scores]
        predictions = [{"conversation": p.conversation, "question": p.question, "answer": p.answer,
                        "log_odds": round(s, 4), "prior": round(prior, 4), "predicted": c}
                       for p, s, c in zip(probes, scores, calibrated)]
        results.append(MethodResult(method, yes_no_metrics(gold, calibrated), yes_no_metrics(gold, raw), seconds,
                                    predictions))
    return results


def write_json(results: list[MethodResult], path: str | Path, meta: dict) -> None:
    payload = {**meta, "methods": [r.to_dict() for r in results]}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(payload, indent=1), encoding="utf-8")


def run_meta(command: list[str], base_model: str, data: dict) -> dict:
    """What every results file records: command, commit, base model, data, date, machine."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent).stdout.strip() or None
    except OSError:
        commit = None
    return {"command": " ".join(command), "git_commit": commit, "base_model": base_model, "data": data,
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {"platform": platform.platform(), "processor": platform.processor(),
                        "cpus": os.cpu_count()}}
