"""The answer path (read/respond.py) on LoCoMo's open questions: the gate that decides abstention
fitted on the development samples, then abstention and open F1 on the report samples.

    .venv/bin/python benchmarks/answer_path.py [--sessions 6] [--never 20] [--no-answers]
    .venv/bin/python benchmarks/answer_path.py --refit benchmarks/results/answer_path-....json
    .venv/bin/python benchmarks/answer_path.py --speaker benchmarks/results/answer_path-....json
    .venv/bin/python benchmarks/answer_path.py --whose benchmarks/results/answer_path-....json
    .venv/bin/python benchmarks/answer_path.py --own benchmarks/results/answer_path-....json

Questions, per sample: every open question whose evidence lies in the first `--sessions` sessions
(categories 1-4 answerable, category 5 adversarial: asked of the wrong speaker) and `--never`
never-discussed ones (other samples' single-hop questions renamed to this sample's speakers, their
words absent from the sessions). The text side reads the sessions as the answer path does (the
base model, TEXT_RETRIEVER's TEXT_K passages) and the support check scores each question.

Development samples 0-3: the gate, two thresholds, one on the support log-odds and one on the
coverage (the share of the question's content words the passages hold): the pair that abstains most
on the adversarial and never-discussed questions while abstaining on at most `--false-abstention`
(0.1) of the answerable ones. `--refit FILE` fits it again from a results file's rows, no model.
Report samples 4-7, never looked at while fitting: the share abstained of category 5, of
never-discussed and of answerable questions, each with a 95% interval; with answers (the default),
every report question answered greedily, and LoCoMo's F1 by category with abstention and without
(an abstained category-5 question scores 1, an abstained answerable one 0), plus the share of
answers that open as a training template. On a 2-core CPU the support checks take about a second a
question, the answers about two. Writes benchmarks/results/answer_path-<model>-<dtype>.json.

`--speaker FILE` tries a cue for category 5, which asks what one speaker did of the other one (no
model, nothing written): for a question naming one speaker, the share of its other content words
that the retrieved passages hold in the named speaker's turns ("own") and in the other speaker's
("other"). It prints, per split and kind, the share a gate on each would abstain on, and what any
speaker cue could reach: the share whose LoCoMo evidence turns are all the other speaker's, and the
share whose evidence the passages hold.

`--whose FILE` asks the reader instead (development samples only, the model loaded, nothing
written): for a question naming one speaker, with that name replaced by "this person", the base
model reads the passages the answer path retrieves and is asked WHOSE_QUESTION; the cue is log
P(named speaker) - log P(the other one) of the first answer token, averaged over both orders of the
two names. A category-5 question should point to the other speaker. It prints the share each
threshold would abstain on, per kind.

`--own FILE` (development samples only, the model loaded, nothing written) tries each speaker's own
turns as the evidence: for a question naming one speaker, the support question read with the
passages BM25 finds among the named speaker's turns, among the other's and among all, and the best
BM25 score in each speaker's turns (the name left out). It prints how well each cue ranks category 5
and never-discussed questions above the answerable ones (AUC; 0.5 is chance).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from pathlib import Path

import bm25s
import torch

from paramem.augment.templates import in_training_template
from paramem.config import DEFAULT_MODEL
from paramem.data.notes import content_words
from paramem.evaluate.locomo import NOT_MENTIONED, build_locomo, never_discussed_questions, open_score
from paramem.evaluate.run import run_meta, write_results
from paramem.metrics.yes_no import ranking_auc
from paramem.model.compute import cpu_info
from paramem.model.loading import decoder_and_head, dtype_of, load_model
from paramem.model.prompts import encode_prompt
from paramem.model.scoring import YesNoScorer, first_token_ids, head_rows, last_hidden_states
from paramem.read import retrieval
from paramem.read.respond import ABSTAIN, SUPPORT_QUESTION, AnswerConfig, Responder, coverage
from paramem.read.retrieval import Passage, make_retriever, retrieval_prompt

RESULTS = Path(__file__).parent / "results"
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "locomo" / "locomo8.json"
KINDS = ("answerable", "adversarial", "never discussed")
WHOSE_QUESTION = (
    'Going by the excerpts, who is this question about, {a} or {b}? "{question}" Answer with the name only.'
)


def questions_of(sample: int, sessions: int, never: int):
    bench = build_locomo(DATA, sample, sessions)
    rows = [(q, "answerable" if q.category != 5 else "adversarial") for q in bench.open_questions]
    rows += [(q, "never discussed") for q in never_discussed_questions(DATA, bench, never)]
    return bench, rows


def scored(model, tokenizer, samples: list[int], sessions: int, never: int, answers: bool) -> list[dict]:
    """One row per question: its sample, kind, category, support log-odds, coverage and (with
    `answers`) answer."""
    out = []
    raw = AnswerConfig(support_threshold=0.0)  # margins are the raw log-odds
    for sample in samples:
        bench, rows = questions_of(sample, sessions, never)
        responder = Responder(model, tokenizer, bench.conversations, None, raw)
        asked = [q.question for q, _ in rows]
        start = time.perf_counter()
        found, systems, support = responder.support(asked)
        support_seconds = time.perf_counter() - start
        written = responder.write(asked, systems) if answers else [None] * len(asked)
        answer_seconds = time.perf_counter() - start - support_seconds
        for (question, kind), margin, passages, answer in zip(rows, support, found, written):
            out.append(
                {
                    "sample": sample,
                    "kind": kind,
                    "category": question.category,
                    "question": question.question,
                    "gold": question.answer,
                    "support": round(margin, 4),
                    "coverage": round(coverage(question.question, passages), 4),
                    "answer": answer,
                }
            )
        print(
            f"sample {sample}: {len(rows)} questions, support {support_seconds:.0f} s"
            + (f", answers {answer_seconds:.0f} s" if answers else ""),
            flush=True,
        )
    return out


def with_coverage(rows: list[dict], sessions: int, never: int) -> list[dict]:
    """Rows of a run made before coverage was recorded, given it: retrieval alone, no model."""
    out = []
    for sample in sorted({r["sample"] for r in rows}):
        bench, asked = questions_of(sample, sessions, never)
        found = Responder(None, None, bench.conversations)._found([q.question for q, _ in asked])
        by_question = {q.question: coverage(q.question, f) for (q, _), f in zip(asked, found)}
        out += [{**r, "coverage": round(by_question[r["question"]], 4)} for r in rows if r["sample"] == sample]
    return out


def abstains(row: dict, gate: dict) -> bool:
    return row["support"] < gate["support"] or row["coverage"] < gate["coverage"]


def fitted_gate(rows: list[dict], false_abstention: float) -> dict:
    """The support and coverage thresholds that abstain most on the unanswerable questions (the mean
    of the adversarial and never-discussed shares) while abstaining on at most `false_abstention` of
    the answerable ones; ties go to the lower thresholds."""
    answerable = [r for r in rows if r["kind"] == "answerable"]
    unanswerable = {kind: [r for r in rows if r["kind"] == kind] for kind in KINDS[1:]}
    best, best_score = {"support": -math.inf, "coverage": 0.0}, -1.0
    for support in sorted({r["support"] for r in answerable}):
        for coverage_least in [i / 20 for i in range(20)]:
            gate = {"support": support, "coverage": coverage_least}
            if sum(abstains(r, gate) for r in answerable) > false_abstention * len(answerable):
                continue
            score = sum(sum(abstains(r, gate) for r in v) / len(v) for v in unanswerable.values()) / 2
            if score > best_score:
                best, best_score = gate, score
    return best


def share(hits: list[bool]) -> dict:
    """A share with its 95% Wilson interval."""
    n = len(hits)
    if not n:
        return {"share": None, "n": 0, "interval": None}
    p, z = sum(hits) / n, 1.96
    centre, half = (
        (p + z * z / (2 * n)) / (1 + z * z / n),
        z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n),
    )
    return {"share": round(p, 4), "n": n, "interval": [round(centre - half, 4), round(centre + half, 4)]}


def abstention(rows: list[dict], gate: dict) -> dict:
    return {kind: share([abstains(r, gate) for r in rows if r["kind"] == kind]) for kind in KINDS}


def open_f1(rows: list[dict], gate: dict | None) -> dict:
    """LoCoMo's score by category, each question answered ABSTAIN where `gate` abstains (None: never)."""

    class Asked:  # what open_score reads
        def __init__(self, row):
            self.category, self.answer = (5 if row["kind"] != "answerable" else row["category"]), row["gold"]

    by_category: dict[str, list[float]] = {}
    for row in rows:
        said = ABSTAIN if gate is not None and abstains(row, gate) else row["answer"]
        name = "never" if row["kind"] == "never discussed" else str(row["category"])
        by_category.setdefault(name, []).append(open_score(Asked(row), said))
    answerable = [s for c, v in by_category.items() if c not in ("5", "never") for s in v]
    return {
        "f1_answerable": round(sum(answerable) / len(answerable), 4) if answerable else None,
        "by_category": {c: {"score": round(sum(v) / len(v), 4), "n": len(v)} for c, v in sorted(by_category.items())},
    }


def summarised(result: dict, dev: list[dict], report: list[dict], false_abstention: float) -> dict:
    """The gate fitted on `dev`, and what it does on both splits; F1 where answers were written."""
    gate = fitted_gate(dev, false_abstention)
    result["gate"] = {k: round(v, 4) for k, v in gate.items()}
    result["development"] = {"abstained": abstention(dev, gate), "questions": dev}
    result["report"] = {"abstained": abstention(report, gate), "questions": report}
    print(f"development samples 0-3: gate {result['gate']}; abstained {result['development']['abstained']}")
    print(f"report samples 4-7: abstained {result['report']['abstained']}")
    written = [r for r in report if r["answer"] is not None]
    if written:
        result["report"]["with_abstention"] = open_f1(written, gate)
        result["report"]["without_abstention"] = open_f1(written, None)
        result["report"]["says_not_mentioned_unprompted"] = share(
            [bool(NOT_MENTIONED.search(r["answer"])) for r in written if r["kind"] != "answerable"]
        )
        result["report"]["in_training_template"] = share([in_training_template(r["answer"]) for r in written])
        for name in ("with_abstention", "without_abstention"):
            print(f"report, {name.replace('_', ' ')}: {result['report'][name]}")
        print(f"answers in a training template: {result['report']['in_training_template']}")
    return result


def speaker_cues(rows: list[dict], sessions: int, never: int) -> list[tuple[dict, tuple[float, float] | None]]:
    """Each row with (own, other) coverage of its words (see the docstring), None if it names no
    single speaker of its sample."""
    out = []
    for sample in sorted({r["sample"] for r in rows}):
        bench, _ = questions_of(sample, sessions, never)
        names = speaker_names(bench)
        mine = [r for r in rows if r["sample"] == sample]
        found = Responder(None, None, bench.conversations)._found([r["question"] for r in mine])
        for row, passages in zip(mine, found):
            named = named_speaker(row["question"], names)
            words = content_words(row["question"]) - {n.casefold() for n in names}
            if named is None or not words:
                out.append((row, None))
                continue
            own = [p.text for p in passages if p.text.split("] ", 1)[-1].startswith(f"{named}:")]
            other = [p.text for p in passages if p.text not in own]
            shares = [len(words & content_words(" ".join(texts))) / len(words) for texts in (own, other)]
            out.append((row, (shares[0], shares[1])))
    return out


def speaker_report(result: dict, never: int) -> None:
    for split in ("development", "report"):
        cues = speaker_cues(result[split]["questions"], result["sessions"], never)
        for kind in KINDS:
            got = [c for r, c in cues if r["kind"] == kind]
            n = len(got)
            own = [round(sum(c is not None and c[0] < t for c in got) / n, 2) for t in (0.2, 0.3, 0.4)]
            gap = [round(sum(c is not None and c[1] - c[0] > t for c in got) / n, 2) for t in (0.0, 0.2, 0.4)]
            print(f"{split}, {kind} ({n}): own < 0.2/0.3/0.4: {own}; other - own > 0/0.2/0.4: {gap}")
        evidence_report(result[split]["questions"], result["sessions"], never, split)


def evidence_report(rows: list[dict], sessions: int, never: int, split: str) -> None:
    """What a speaker cue could reach, from LoCoMo's evidence turns: per kind, the share of questions
    naming one speaker whose evidence is all the other speaker's, and the share whose evidence the
    retrieved passages hold."""
    raw = {str(s["sample_id"]): s for s in json.loads(DATA.read_text(encoding="utf-8"))}
    counts: dict[str, list[tuple[bool, bool]]] = {}
    for sample in sorted({r["sample"] for r in rows}):
        bench, _ = questions_of(sample, sessions, never)
        names = speaker_names(bench)
        conversation = raw[bench.sample_id]["conversation"]
        turns = {t["dia_id"]: t for v in conversation.values() if isinstance(v, list) for t in v}
        evidence = {q["question"]: q.get("evidence", []) for q in raw[bench.sample_id]["qa"]}
        mine = [r for r in rows if r["sample"] == sample and r["kind"] != "never discussed"]
        found = Responder(None, None, bench.conversations)._found([r["question"] for r in mine])
        for row, passages in zip(mine, found):
            named = named_speaker(row["question"], names)
            said = [turns[e.strip()] for e in evidence.get(row["question"], []) if e.strip() in turns]
            if named is None or not said:
                continue
            others = all(t["speaker"] != named for t in said)
            held = any(t["text"] in p.text for t in said for p in passages)
            counts.setdefault(row["kind"], []).append((others, held))
    for kind, got in counts.items():
        others, held = (round(sum(g[i] for g in got) / len(got), 2) for i in (0, 1))
        print(
            f"{split}, {kind} ({len(got)} naming one speaker, with evidence): evidence all the other "
            f"speaker's {others}; an evidence turn among the passages {held}"
        )


def speaker_names(bench) -> list[str]:
    """The sample's speakers, as its turns name them."""
    return sorted({m.name for c in bench.conversations for m in c.messages if m.name})


def named_speaker(question: str, names: list[str]) -> str | None:
    """The one speaker of `names` the question names, or None."""
    named = [n for n in names if re.search(rf"\b{re.escape(n)}\b", question)]
    return named[0] if len(named) == 1 else None


def speaker_pair(question: str, names: list[str]) -> tuple[str, str] | None:
    """(the speaker the question names, the other one), for a sample of two speakers; else None."""
    named = named_speaker(question, names)
    if named is None or len(names) != 2:
        return None
    return named, next(n for n in names if n != named)


def by_sample(rows: list[dict], sessions: int, never: int):
    """Per sample of `rows`, in order: its benchmark, its speakers' names, and each of its rows with
    the (named, other) speakers the row's question names (None: not a single speaker of two)."""
    for sample in sorted({r["sample"] for r in rows}):
        bench, _ = questions_of(sample, sessions, never)
        names = speaker_names(bench)
        yield bench, names, [(r, speaker_pair(r["question"], names)) for r in rows if r["sample"] == sample]


@torch.inference_mode()
def whose_margins(model, tokenizer, rows: list[dict], sessions: int, never: int) -> list[float | None]:
    """Per row, log P(named) - log P(other) as the answer to WHOSE_QUESTION (None: no single name)."""
    decoder, _ = decoder_and_head(model)
    out = []
    for bench, names, named_rows in by_sample(rows, sessions, never):
        heads = {n: head_rows(model, first_token_ids(tokenizer, [n])) for n in names}
        responder = Responder(model, tokenizer, bench.conversations)
        for row, pair in named_rows:
            if pair is None:
                out.append(None)
                continue
            named, other = pair
            masked = re.sub(rf"\b{re.escape(named)}\b", "this person", row["question"])
            system = retrieval_prompt(responder._found([row["question"]])[0])
            asked = [WHOSE_QUESTION.format(a=a, b=b, question=masked) for a, b in ((named, other), (other, named))]
            prompts = [encode_prompt(tokenizer, q, system) for q in asked]
            last = last_hidden_states(decoder, prompts, tokenizer.pad_token_id)
            score = {n: (last @ weight.T + bias).logsumexp(-1) for n, (weight, bias) in heads.items()}
            out.append(round((score[named] - score[other]).mean().item(), 4))
    return out


def whose_report(model, tokenizer, result: dict, never: int) -> None:
    rows = result["development"]["questions"]
    margins = whose_margins(model, tokenizer, rows, result["sessions"], never)
    for kind in KINDS:
        got = [m for r, m in zip(rows, margins) if r["kind"] == kind]
        shares = [round(sum(m is not None and m < t for m in got) / len(got), 2) for t in (-2, -1, 0, 1)]
        named = sum(m is not None for m in got)
        print(f"development, {kind} ({len(got)}, {named} naming one speaker): cue < -2/-1/0/1: {shares}")


def own_turn_cues(model, tokenizer, rows: list[dict], sessions: int, never: int) -> list[dict | None]:
    """Per row naming one speaker of two: the support log-odds read with the 5 passages BM25 finds
    among the named speaker's own turns ("own"), among the other's ("other") and among all ("all"),
    and the best BM25 score of each speaker's turns for the question without the name (None: no single
    name)."""
    scorer = YesNoScorer(model, tokenizer)
    out = []
    for bench, names, named_rows in by_sample(rows, sessions, never):
        corpus = retrieval.passages(bench.conversations)
        spoken = {n: [p for p in corpus if p.text.split("] ", 1)[-1].startswith(f"{n}:")] for n in names}
        retrievers = {n: make_retriever("bm25", turns) for n, turns in spoken.items()}
        everyone = make_retriever("bm25", corpus)
        for row, pair in named_rows:
            if pair is None:
                out.append(None)
                continue
            named, other = pair
            question = row["question"]
            found = [retrievers[named].search([question], 5)[0], retrievers[other].search([question], 5)[0]]
            found.append(everyone.search([question], 5)[0])
            asked = [SUPPORT_QUESTION.format(question=question)] * 3
            own, theirs, whole = scorer.log_odds(asked, [retrieval_prompt(f) for f in found])
            unnamed = re.sub(rf"\b{re.escape(named)}('s)?\b", "", question)
            best = {n: bm25_best(spoken[n], unnamed) for n in (named, other)}
            out.append({"own": own, "other": theirs, "all": whole, "bm25_own": best[named], "bm25_other": best[other]})
    return out


def bm25_best(turns: list[Passage], query: str) -> float:
    """The best BM25 score among `turns` (speakers' names left out of the index) for `query`."""
    index = bm25s.BM25()
    texts = [t.text.split(": ", 1)[-1] for t in turns]
    index.index(bm25s.tokenize(texts, stopwords="en", show_progress=False), show_progress=False)
    query_tokens = bm25s.tokenize([query], stopwords="en", show_progress=False)
    _, scores = index.retrieve(query_tokens, k=1, show_progress=False)
    return float(scores[0][0])


def own_turn_report(model, tokenizer, result: dict, never: int) -> None:
    """How well each own-turn cue ranks category 5 (and never-discussed questions) above the
    answerable ones: AUC, where 0.5 is chance."""
    rows = result["development"]["questions"]
    cues = own_turn_cues(model, tokenizer, rows, result["sessions"], never)
    tried = {
        "support, named speaker's turns (low: abstain)": lambda c: -c["own"],
        "support, other's turns minus named's": lambda c: c["other"] - c["own"],
        "support, all turns minus named's": lambda c: c["all"] - c["own"],
        "BM25 best, other's over named's": lambda c: (c["bm25_other"] + 1) / (c["bm25_own"] + 1),
    }
    answerable = [c for r, c in zip(rows, cues) if c is not None and r["kind"] == "answerable"]
    for kind in KINDS[1:]:
        flagged = [c for r, c in zip(rows, cues) if c is not None and r["kind"] == kind]
        for name, cue in tried.items():
            gold = ["no"] * len(answerable) + ["yes"] * len(flagged)
            auc = ranking_auc(gold, [cue(c) for c in answerable + flagged])
            print(f"development, {kind} ({len(flagged)}) against answerable ({len(answerable)}): {name}: AUC {auc:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-model", default=DEFAULT_MODEL)
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--sessions", type=int, default=6)
    parser.add_argument("--never", type=int, default=20, help="never-discussed questions per sample")
    parser.add_argument("--false-abstention", type=float, default=0.1)
    parser.add_argument("--no-answers", action="store_true", help="support checks only, no answers written")
    parser.add_argument("--refit", type=Path, help="a results file: fit the gate again from its rows, no model")
    parser.add_argument("--speaker", type=Path, help="a results file: how a speaker cue would abstain, no model")
    parser.add_argument("--whose", type=Path, help="a results file: how the reader's speaker cue would abstain")
    parser.add_argument("--own", type=Path, help="a results file: how cues from each speaker's own turns rank")
    args = parser.parse_args()
    started = time.perf_counter()
    if args.speaker is not None:
        speaker_report(json.loads(args.speaker.read_text(encoding="utf-8")), args.never)
        return
    if args.refit is not None:
        result = json.loads(args.refit.read_text(encoding="utf-8"))
        dev = with_coverage(result["development"]["questions"], result["sessions"], args.never)
        report = with_coverage(result["report"]["questions"], result["sessions"], args.never)
        result = summarised({**result, "refit_command": " ".join(sys.argv)}, dev, report, args.false_abstention)
        result["answer_config"] = {k: result["answer_config"][k] for k in ("retriever", "k", "max_new_tokens")}
        result.pop("threshold", None)
        args.refit.write_text(json.dumps(result, indent=1), encoding="utf-8")
        print(f"wrote {args.refit}")
        return
    model, tokenizer = load_model(args.base_model, args.dtype)
    model.eval()
    if args.whose is not None:
        whose_report(model, tokenizer, json.loads(args.whose.read_text(encoding="utf-8")), args.never)
        return
    if args.own is not None:
        own_turn_report(model, tokenizer, json.loads(args.own.read_text(encoding="utf-8")), args.never)
        return
    dtype = dtype_of(model)
    dev = scored(model, tokenizer, [0, 1, 2, 3], args.sessions, args.never, answers=False)
    report = scored(model, tokenizer, [4, 5, 6, 7], args.sessions, args.never, answers=not args.no_answers)
    result = {
        **run_meta(sys.argv, args.base_model, {"locomo": str(DATA)}, dtype),
        "support_question": SUPPORT_QUESTION,
        # how the passages were found and the answers written; the gate is fitted here, not read
        "answer_config": {k: getattr(AnswerConfig(), k) for k in ("retriever", "k", "max_new_tokens")},
        "sessions": args.sessions,
    }
    result = summarised(result, dev, report, args.false_abstention)
    result["seconds"] = round(time.perf_counter() - started, 1)
    print(f"CPU: {cpu_info()}; dtype {dtype}")
    write_results(RESULTS / f"answer_path-{args.base_model}-{dtype}.json", result)


if __name__ == "__main__":
    main()
