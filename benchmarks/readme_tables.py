"""The README's headline tables, made from the results files they quote, so that no figure in the
README can drift from its JSON.

    .venv/bin/python benchmarks/readme_tables.py          # rewrite the tables in README.md
    .venv/bin/python benchmarks/readme_tables.py --check  # exit 1 if README.md differs (the tests do this)

Each table sits in README.md between `<!-- table: NAME -->` and `<!-- /table -->`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"
BLOCK = re.compile(r"(<!-- table: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /table -->)", re.DOTALL)
LOCOMO_METHODS = {  # (method, rule) in the results file: the name in the README
    ("none", "prior"): "none",
    ("memory-plum", "prior"): "memory: PLUM (sequential LoRA)",
    ("memory-distill", "prior"): "memory: distilled LoRA",
    ("memory-cartridge", "balanced"): "memory: cartridges",
    ("context", "prior"): "context (sessions in the prompt)",
    ("bm25", "prior"): "BM25",
    ("dense", "prior"): "dense",
    ("hybrid-plum", "prior"): "PLUM + dense",
    ("hybrid-distill", "prior"): "distilled LoRA + dense",
    ("hybrid-cartridge", "prior"): "cartridges + dense",
}
REPLY_METHODS = ["base", "tplp", "rag", "uelp", "plum", "milp"]


def _read(name: str) -> dict:
    return json.loads((RESULTS / name).read_text(encoding="utf-8"))


def _source(results: dict, file: str) -> str:
    machine = results.get("machine", {}).get("cpu", {}).get("model") or results.get("meta", {}).get("cpu", "")
    return f"{results['base_model']}, {results['dtype']}, {machine} · [{file}](benchmarks/results/{file})"


def locomo() -> str:
    results = _read("locomo_main-main.json")
    rows = {(r["method"], r["rule"]): r for r in results["rows"]}
    lines = [
        "| method | accuracy [95%] | yes / no | AUC | open F1 | s/answer |",
        "|---|---|---|---|---|---|",
    ]
    for key, name in LOCOMO_METHODS.items():
        r = rows[key]
        low, high = r["accuracy_interval"]
        lines.append(
            f"| {name} | {r['accuracy']:.3f} [{low:.2f}, {high:.2f}] "
            f"| {r['yes_accuracy']:.2f} / {r['no_accuracy']:.2f} "
            f"| {r['auc']:.3f} | {r['open_f1']:.3f} | {r['seconds_per_answer']:.2f} |"
        )
    n = next(iter(rows.values()))["n"]
    lines.append(f"\n{n} yes/no probes, half yes · {_source(results, 'locomo_main-main.json')}")
    return "\n".join(lines)


def demo() -> str:
    results = _read("demo-bf16.json")
    lines = ["| method | readout, rule | accuracy | yes / no | AUC |", "|---|---|---|---|---|"]
    for m in results["methods"]:
        rule = "balanced" if m["readout"] == "recall" else "prior"
        s = m["metrics"][rule]
        lines.append(
            f"| {m['method']} | {m['readout']}, {rule} | {s['accuracy']:.3f} | "
            f"{s['yes_accuracy']:.2f} / {s['no_accuracy']:.2f} | {m['auc']:.3f} |"
        )
    lines.append(f"\n{s['n']} probes, half yes · {_source(results, 'demo-bf16.json')}")
    return "\n".join(lines)


def replies() -> str:
    results = _read("replies-msc-default/results.json")
    lines = ["| method | ROUGE-1 | ROUGE-L | Persona-F1 | win rate vs TpLP (calibrated) |", "|---|---|---|---|---|"]
    for name in REPLY_METHODS:
        m = results["methods"][name]
        win = (m.get("calibrated_win_vs_tplp") or {}).get("win_rate")
        lines.append(
            f"| {name} | {m['rouge1']:.3f} | {m['rouge_l']:.3f} | {m['persona_f1']:.3f} | "
            f"{'–' if win is None else f'{win:.2f}'} |"
        )
    replies_n = results["methods"]["base"]["replies"]
    source = f"{results['base_model']}, {results['dtype']}"
    link = "[results.json](benchmarks/results/replies-msc-default/results.json)"
    lines.append(f"\n{replies_n} replies · {source} · {link}")
    return "\n".join(lines)


def serving() -> str:
    results = _read("serve_load-qwen2.5-0.5b-bfloat16.json")
    load, batching, alone = results["load"], results["batching"], results["alone"]
    plain = load["latency"]["plain"]
    return "\n".join(
        [
            "| users | requests | leaks | hangs | 5xx | plain p50 / p99, alone | under load | batched speed-up |",
            "|---|---|---|---|---|---|---|---|",
            f"| {results['users']} (cache {results['cache']}) | {load['requests']} | {load['leaks']} | "
            f"{load['hangs']} | {load['server_errors']} | {alone['p50_s']:.1f} / {alone['p99_s']:.1f} s | "
            f"{plain['p50_s']:.1f} / {plain['p99_s']:.1f} s | {batching['speedup']:.2f}x |",
            f"\n{_source(results, 'serve_load-qwen2.5-0.5b-bfloat16.json')}",
        ]
    )


def text_side() -> str:
    """The yes/no probes on the report samples: no retrieval, each retriever at the default k, and the
    text side chosen on the development samples (the `text` and `paramem` methods' reading)."""
    file = "text_side-qwen2.5-0.5b-bfloat16.json"
    results = _read(file)
    lines = ["| method | k | accuracy [95%] | yes / no | AUC [95%] |", "|---|---|---|---|---|"]
    for name, r in results["report"].items():
        method, k = name.split("@")
        k = "–" if method == "none" else k
        shipped = " (chosen: `text`, `paramem`)" if name == results["chosen"] else ""
        low, high = r["intervals"]["accuracy"]
        auc_low, auc_high = r["auc_interval"]
        lines.append(
            f"| {method}{shipped} | {k} | {r['accuracy']:.3f} [{low:.2f}, {high:.2f}] | "
            f"{r['yes_accuracy']:.2f} / {r['no_accuracy']:.2f} | {r['auc']:.3f} [{auc_low:.2f}, {auc_high:.2f}] |"
        )
    n = next(iter(results["report"].values()))["n"]
    lines.append(f"\n{n} yes/no probes, half yes, read under the prior rule · {_source(results, file)}")
    return "\n".join(lines)


def answer_path() -> str:
    """The answer path's open questions on the report samples: abstention and LoCoMo's F1."""
    file = "answer_path-qwen2.5-0.5b-bfloat16.json"
    results = _read(file)
    report = results["report"]
    kinds = report["abstained"]
    lines = [
        "| | answerable (cat. 1-4) | adversarial (cat. 5) | never discussed |",
        "|---|---|---|---|",
        "| questions | "
        + " | ".join(str(kinds[k]["n"]) for k in ("answerable", "adversarial", "never discussed"))
        + " |",
        "| abstained [95%] | "
        + " | ".join(
            f"{kinds[k]['share']:.2f} [{kinds[k]['interval'][0]:.2f}, {kinds[k]['interval'][1]:.2f}]"
            for k in ("answerable", "adversarial", "never discussed")
        )
        + " |",
    ]
    if "with_abstention" in report:
        with_, without = report["with_abstention"]["f1_answerable"], report["without_abstention"]["f1_answerable"]
        templated = report["in_training_template"]["share"]
        lines.append(
            f"\nOpen F1 on the answerable ones: {with_:.3f} with abstention, {without:.3f} without; "
            f"answers in a training template: {templated:.2f}."
        )
    gate = results["gate"]
    lines.append(
        f"\nGate fitted on samples 0-3: support log-odds {gate['support']:+.2f}, coverage {gate['coverage']:.2f} · "
        + _source(results, file)
    )
    return "\n".join(lines)


TABLES = {
    "locomo": locomo,
    "text-side": text_side,
    "answer-path": answer_path,
    "demo": demo,
    "replies": replies,
    "serving": serving,
}


def rendered(readme: str) -> str:
    """`readme` with every table block made again from its results file."""
    return BLOCK.sub(lambda m: m.group(1) + TABLES[m.group("name")]() + "\n" + m.group(4), readme)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    readme = README.read_text(encoding="utf-8")
    fresh = rendered(readme)
    if args.check:
        sys.exit(0 if fresh == readme else 1)
    README.write_text(fresh, encoding="utf-8")


if __name__ == "__main__":
    main()
