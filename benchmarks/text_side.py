"""The text side on LoCoMo: BM25, dense retrieval and their reciprocal-rank fusion, each at several k,
chosen on the development samples, then the choice beside BM25 and dense on the report samples.

    .venv/bin/python benchmarks/text_side.py [--ks 3,5,8] [--sessions 6] [--dtype bfloat16]
    .venv/bin/python benchmarks/text_side.py --report-only   # no choice: every retriever at the default k

What is measured: the yes/no probes of the first `--sessions` sessions of each sample (balanced, as
`paramem locomo` makes them), the base model reading the turns each method retrieves for a question,
by log-odds under the prior rule (the text methods' rule, `readers.TEXT_RULE`), pooled over samples:
accuracy with yes and no apart, 95% intervals, and the AUC of each probe's margin over its sample's
prior. The choice: on development samples 0-3 only, the retriever and k with the best pooled
accuracy (ties: AUC); then on report samples 4-7, never looked at while choosing, the choice beside
BM25 and dense at the default k and no retrieval, in the same run. With --report-only nothing is
chosen: none, BM25, dense and fused at the default k (5; fusion's constant is the paper's 60), on the
report samples alone. On a 2-core CPU a probe costs 1-5 s, so the whole choice is about an hour. Writes
benchmarks/results/text_side-<model>-<dtype>.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from peft import LoraConfig, get_peft_model

from paramem.config import DEFAULT_MODEL
from paramem.evaluate.locomo import build_locomo, split_of
from paramem.evaluate.run import evaluate_yes_no, run_meta, write_results
from paramem.metrics.yes_no import margin_summary
from paramem.model.compute import cpu_info
from paramem.model.loading import dtype_of, load_model
from paramem.read.readers import TEXT_RULE
from paramem.read.retrieval import RetrievalConfig

RESULTS = Path(__file__).parent / "results"
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "locomo" / "locomo8.json"
RETRIEVERS = ("bm25", "dense", "fused")
DEFAULT_K = RetrievalConfig().k


def scored(model, tokenizer, samples: list[int], sessions: int, methods: list[tuple[str, int]]) -> dict:
    """Per (method, k): the probes' gold answers, margins over their sample's prior, and seconds."""
    out = {key: {"gold": [], "margins": [], "seconds": 0.0} for key in methods}
    for sample in samples:
        bench = build_locomo(DATA, sample, sessions)
        for method, k in methods:
            [result] = evaluate_yes_no(
                model, tokenizer, bench.probes, [method], bench.conversations, retrieval=RetrievalConfig(k=k)
            )
            prior = result.thresholds[TEXT_RULE]
            row = out[(method, k)]
            row["gold"] += [p["answer"] for p in result.predictions]
            row["margins"] += [p["score"] - prior for p in result.predictions]
            row["seconds"] += result.seconds
        print(f"sample {sample} ({split_of(sample)}): {len(bench.probes)} probes", flush=True)
    return out


def pooled(row: dict) -> dict:
    return {
        **margin_summary(row["gold"], row["margins"]),
        "seconds_per_probe": round(row["seconds"] / max(1, len(row["gold"])), 3),
    }


def table(rows: dict[str, dict]) -> str:
    lines = ["| method | k | accuracy [95%] | yes / no | AUC | s/probe |", "|---|---|---|---|---|---|"]
    for name, r in rows.items():
        low, high = r["intervals"]["accuracy"]
        lines.append(
            f"| {name.split('@')[0]} | {name.split('@')[1]} | {r['accuracy']:.3f} [{low:.2f}, {high:.2f}] | "
            f"{r['yes_accuracy']:.2f} / {r['no_accuracy']:.2f} | {r['auc']:.3f} | {r['seconds_per_probe']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-model", default=DEFAULT_MODEL)
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--ks", default="3,5,8", help="passages per question to try on the development samples")
    parser.add_argument("--sessions", type=int, default=6)
    parser.add_argument("--report-only", action="store_true", help="no choice: each retriever at the default k")
    args = parser.parse_args()
    started = time.perf_counter()
    base, tokenizer = load_model(args.base_model, args.dtype)
    # evaluate_yes_no switches a memory's adapter off for the text methods: an adapter that changes
    # nothing (LoRA B starts at zero) gives the base model that switch.
    model = get_peft_model(base, LoraConfig(r=1, target_modules=["q_proj"])).eval()
    dtype = dtype_of(base)
    ks = [int(k) for k in args.ks.split(",")]

    dev, chosen = {}, f"fused@{DEFAULT_K}"
    if not args.report_only:
        dev_methods = [("none", DEFAULT_K)] + [(r, k) for r in RETRIEVERS for k in ks]
        dev_rows = scored(model, tokenizer, [0, 1, 2, 3], args.sessions, dev_methods)
        dev = {f"{m}@{k}": pooled(row) for (m, k), row in dev_rows.items()}
        print("development samples 0-3, pooled\n" + table(dev), flush=True)
        candidates = {name: r for name, r in dev.items() if not name.startswith("none")}
        chosen = max(candidates, key=lambda name: (candidates[name]["accuracy"], candidates[name]["auc"]))
    method, k = chosen.split("@")

    report_methods = [("none", DEFAULT_K), *((r, DEFAULT_K) for r in RETRIEVERS), (method, int(k))]
    report_methods = list(dict.fromkeys(report_methods))
    report_rows = scored(model, tokenizer, [4, 5, 6, 7], args.sessions, report_methods)
    report = {f"{m}@{k}": pooled(row) for (m, k), row in report_rows.items()}
    print(("" if args.report_only else f"chosen on development data: {chosen}\n") + "report samples 4-7, pooled")
    print(table(report), flush=True)
    result = {
        **run_meta(sys.argv, args.base_model, {"locomo": str(DATA)}, dtype),
        "sessions": args.sessions,
        "rule": TEXT_RULE,
        "development": dev,
        "chosen": None if args.report_only else chosen,
        "report": report,
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(f"CPU: {cpu_info()}; dtype {dtype}")
    write_results(
        RESULTS / f"text_side-{args.base_model}-{dtype}{'-report-only' if args.report_only else ''}.json", result
    )


if __name__ == "__main__":
    main()
