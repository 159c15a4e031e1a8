"""The memory as the text's complement (issue 38, step 2): does reading the memory add to the text
side? Chosen on LoCoMo's development samples, never on the report samples.

    .venv/bin/python benchmarks/complement.py [--samples 0,1,2,3] [--sessions 6] [--epochs 3] [--open 10]
        [--ways none,text,memory,beside,recite] [--keep-text always|until-consolidated|never] [--unanswerable]

Each sample's first `--sessions` sessions (0: all of them, the scale run) are remembered as
`paramem remember` learns them (the default memory, PLUM's LoRA, the extractive teacher; `--epochs`
as `paramem locomo`'s default, 3), into benchmarks/results/complement/home/ (kept, so a rerun
resumes and rescoring learns nothing).
Then its yes/no probes (balanced, as `paramem locomo` makes them) and the first `--open` answerable
open questions (categories 1-4, evidence in those sessions; 0: every one) go through the answer path
(read/respond.py) in each way it can read; with `--unanswerable`, so do every category-5 question
(asked of the wrong speaker) and NEVER never-discussed ones, scored as the share abstained:

  none     the base model alone, nothing read (the floor every memory is measured against)
  text     what ships: the base model reads the text side's passages, the memory off
  memory   the memory alone, as with --keep-text never (complement d), writing its own open answers
  recital  the memory alone, an open question's answer written by the base model reading what the
           memory recites for it (AnswerConfig.read_recital: ships since session 31)
  beside   (a) the memory reads the same passages (AnswerConfig.memory_beside_text)
  recite   (b) the memory's recitation for the question joins the retrieval query; the passages
           are read as text reads them (AnswerConfig.recite)

Pooled over the samples: yes/no accuracy with yes and no apart, 95% intervals, the AUC of each
probe's margin; open F1 (LoCoMo's token F1, an abstention scoring 0) and the share abstained. A way
ships only if it beats text here. Replay is bounded (TrainConfig.replay_share), so every session costs
about the same: 5-7 minutes on a 2-core CPU, some 40 minutes a sample of 6 sessions.
Writes benchmarks/results/complement-<samples>[-<ways>][-<keep-text>][-<n>-sessions]-<model>-<dtype>.json after each
sample. With `--keep-text until-consolidated` the sessions are learned as the privacy mode learns
them (each one's notes the memory's own once it is learned, replay reading those), under their own
user; `--ways none,memory` then measures the memory alone against nothing read, as the issue's
"memory alone after the text is dropped" target asks.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from paramem.augment.teachers.extractive import ExtractiveTeacher
from paramem.augment.templates import in_training_template
from paramem.config import DEFAULT_MODEL, RememberConfig, TrainConfig
from paramem.evaluate.locomo import build_locomo, never_discussed_questions, split_of, token_f1
from paramem.evaluate.run import evaluate_yes_no, run_meta, write_results
from paramem.lifecycle.remember import remember
from paramem.metrics.yes_no import margin_summary, yes_no_metrics
from paramem.model.compute import cpu_info
from paramem.read.loading import load_memory
from paramem.read.readers import TEXT_RULE
from paramem.read.respond import AnswerConfig, Responder
from paramem.store.user import UserMemory

RESULTS = Path(__file__).parent / "results"
HOME = RESULTS / "complement" / "home"
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "locomo" / "locomo8.json"
WAYS = {
    "none": None,  # the evaluation's none method: the base model, no passages, the adapter off
    "text": AnswerConfig(),
    # read with no passages: the memory alone, writing its own open answers (before session 31)
    "memory": AnswerConfig(read_recital=False),
    # the memory alone, an open answer written by the base model reading the memory's recitation
    "recital": AnswerConfig(read_recital=True),
    "beside": AnswerConfig(memory_beside_text=True),
    "recite": AnswerConfig(recite=True),
}
NEVER = 20  # never-discussed questions per sample with --unanswerable, as benchmarks/answer_path.py asks


def learned(sample: int, sessions: int, epochs: int, dtype: str | None, keep_text: str = "always") -> str:
    """The sample's user, its sessions remembered (only what is not yet learned is learned)."""
    user = f"s{sample}-{sessions or 'all'}" + ("" if keep_text == "always" else f"-{keep_text}")
    bench = build_locomo(DATA, sample, sessions or None)
    config = RememberConfig(dtype=dtype, keep_text=keep_text, train=TrainConfig(epochs=epochs))
    start = time.perf_counter()
    done = remember(user, bench.conversations, ExtractiveTeacher(), config, HOME)
    if done:
        print(f"sample {sample}: learned {len(done)} sessions in {time.perf_counter() - start:.0f} s", flush=True)
    return user


def answered(
    sample: int, sessions: int, user: str, ways: list[str], open_questions: int, unanswerable: bool, dtype: str | None
) -> dict:
    """Per way: each probe's gold answer and margin, each open question's F1 and abstention, seconds;
    with `unanswerable`, whether it abstained on each category-5 and never-discussed question."""
    bench = build_locomo(DATA, sample, sessions or None)
    model, tokenizer, memory = load_memory(user, HOME, dtype)
    asked = [q for q in bench.open_questions if q.category != 5][: open_questions or None]
    adversarial = [q.question for q in bench.open_questions if q.category == 5] if unanswerable else []
    never = [q.question for q in never_discussed_questions(DATA, bench, NEVER)] if unanswerable else []
    out = {}
    for way in ways:
        if way == "none":
            [none] = evaluate_yes_no(model, tokenizer, bench.probes, ["none"])
            prior = none.thresholds[TEXT_RULE]
            out[way] = {
                "source": "nothing read",
                "gold": [p["answer"] for p in none.predictions],
                "margins": [round(p["score"] - prior, 4) for p in none.predictions],
                "f1": [],
                "abstained": [],
                "seconds_per_probe": round(none.seconds / len(bench.probes), 3),
            }
            continue
        conversations = [] if way in ("memory", "recital") else bench.conversations
        responder = Responder(model, tokenizer, conversations, memory, WAYS[way])
        start = time.perf_counter()
        probes = responder.respond([p.question for p in bench.probes])
        middle = time.perf_counter()
        replies = responder.respond([q.question for q in asked])
        out[way] = {
            "source": responder.source,
            "gold": [p.answer for p in bench.probes],
            "margins": [round(r.margin, 4) for r in probes],
            "f1": [round(0.0 if r.abstained else token_f1(r.answer, q.answer), 4) for r, q in zip(replies, asked)],
            "abstained": [r.abstained for r in replies],
            "answers": [r.answer for r in replies],
            "templated": [in_training_template(r.answer) for r in replies if not r.abstained],
            "seconds_per_probe": round((middle - start) / len(probes), 3),
            "seconds_per_open": round((time.perf_counter() - middle) / max(1, len(asked)), 3),
        }
        if unanswerable:
            said = responder.respond(adversarial + never)
            out[way]["abstained_adversarial"] = [r.abstained for r in said[: len(adversarial)]]
            out[way]["abstained_never"] = [r.abstained for r in said[len(adversarial) :]]
    for way in ways:
        yes_no = yes_no_metrics(out[way]["gold"], ["yes" if m > 0 else "no" for m in out[way]["margins"]])
        print(f"sample {sample} ({split_of(sample)}), {way}: accuracy {yes_no.accuracy:.3f}", flush=True)
    return out


def share(hits: list[bool]) -> float | None:
    return round(sum(hits) / len(hits), 4) if hits else None


def pooled(rows: list[dict]) -> dict:
    gold = [g for r in rows for g in r["gold"]]
    margins = [m for r in rows for m in r["margins"]]
    f1 = [s for r in rows for s in r["f1"]]
    abstained = [a for r in rows for a in r["abstained"]]
    templated = [t for r in rows for t in r.get("templated", [])]
    out = {
        **margin_summary(gold, margins),
        "open_f1": round(sum(f1) / len(f1), 4) if f1 else None,
        "open_abstained": share(abstained),
        "open_questions": len(f1),
        "open_templated": share(templated),
    }
    for kind in ("adversarial", "never"):  # --unanswerable: the share abstained, and how many were asked
        hits = [a for r in rows for a in r.get(f"abstained_{kind}", [])]
        out[f"{kind}_abstained"], out[f"{kind}_questions"] = share(hits), len(hits)
    return out


def table(rows: dict[str, dict]) -> str:
    lines = [
        "| way | accuracy [95%] | yes / no | AUC | open F1 | abstained | in a template | cat. 5 abstained | never "
        "discussed abstained |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for way, r in rows.items():
        low, high = r["intervals"]["accuracy"]
        f1 = "-" if r["open_f1"] is None else f"{r['open_f1']:.3f} ({r['open_questions']})"
        abstained = "-" if r["open_abstained"] is None else f"{r['open_abstained']:.2f}"
        templated = "-" if r.get("open_templated") is None else f"{r['open_templated']:.2f}"
        unanswerable = [
            "-" if r.get(f"{kind}_abstained") is None else f"{r[f'{kind}_abstained']:.2f} ({r[f'{kind}_questions']})"
            for kind in ("adversarial", "never")
        ]
        lines.append(
            f"| {way} | {r['accuracy']:.3f} [{low:.2f}, {high:.2f}] | {r['yes_accuracy']:.2f} / "
            f"{r['no_accuracy']:.2f} | {r['auc']:.3f} | {f1} | {abstained} | {templated} | {' | '.join(unanswerable)} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", default="0,1,2,3", help="LoCoMo samples (0-3 development, 4-7 report)")
    parser.add_argument("--sessions", type=int, default=6, help="first sessions of each sample (0: all)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--open", type=int, default=10, help="answerable open questions per sample (0: all)")
    parser.add_argument("--ways", default=",".join(WAYS))
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--keep-text", default="always", help="how the sessions are learned (paramem remember's)")
    parser.add_argument("--unanswerable", action="store_true", help="category-5 and never-discussed questions too")
    args = parser.parse_args()
    samples, ways = [int(s) for s in args.samples.split(",")], args.ways.split(",")
    started = time.perf_counter()
    name = "-".join(str(s) for s in samples) + ("" if ways == list(WAYS) else "-" + "-".join(ways))
    name += "" if args.keep_text == "always" else f"-{args.keep_text}"
    name += "" if args.sessions == 6 else f"-{args.sessions or 'all'}-sessions"
    per_sample, dtype = {}, None
    for sample in samples:  # the file is written after each sample: a long run's samples so far
        user = learned(sample, args.sessions, args.epochs, args.dtype, args.keep_text)
        per_sample[sample] = answered(sample, args.sessions, user, ways, args.open, args.unanswerable, args.dtype)
        dtype = dtype or UserMemory(user, HOME).settings().get("dtype")
        rows = {way: pooled([per_sample[s][way] for s in per_sample]) for way in ways}
        splits = sorted({split_of(s) for s in per_sample})
        print(f"samples {', '.join(map(str, per_sample))} ({', '.join(splits)}), pooled\n{table(rows)}", flush=True)
        result = {
            **run_meta(sys.argv, DEFAULT_MODEL, {"locomo": str(DATA)}, dtype),
            "samples": list(per_sample),
            "splits": splits,
            "sessions": args.sessions,
            "epochs": args.epochs,
            "pooled": rows,
            "per_sample": per_sample,
            "seconds": round(time.perf_counter() - started, 1),
        }
        print(f"CPU: {cpu_info()}; dtype {dtype}")
        write_results(RESULTS / f"complement-{name}-{DEFAULT_MODEL}-{dtype}.json", result)


if __name__ == "__main__":
    main()
