"""How soon a new conversation is answerable, how long it takes to consolidate, and what each
`--keep-text` mode leaves on disk (issue 38's costs).

    .venv/bin/python benchmarks/answerable.py [--turns 20] [--epochs 3]

The conversation: the first session of LoCoMo development sample 0 with at least `--turns` turns,
cut to that many; the question: one of LoCoMo's single-hop questions whose evidence is in it.
`remember` (the embedded model, the extractive teacher, `--epochs`) runs in a child process at the
CPU priority the server gives its learning jobs (`--niceness`, ServeConfig.job_niceness: replies
come first; 0 shares the CPU evenly), and the clock starts when `remember` is called:

  indexed       its turns are committed to the store (polled every 10 ms);
  answered      the answer path has answered the question from them, the base model already loaded
                (as a server holds it): the seconds a user waits after an upload, the learning
                running beside it, niced as a server runs its jobs;
  answered cold `paramem ask` in a new process, model loading included, started after that answer
                (its own seconds; the learning still running);
  answered warm while learning  the first answer again, after the cold one: the learning is past
                its model loading by then (its own seconds);
  consolidated  `remember` has returned: the memory holds the conversation.

Then the store's bytes after consolidation in each mode (until-consolidated and never learned again
with one epoch: the bytes do not depend on it). Writes benchmarks/results/answerable-<model>-<dtype>.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from paramem.augment.teachers.extractive import ExtractiveTeacher
from paramem.config import DEFAULT_MODEL, RememberConfig, TrainConfig
from paramem.data.formats import load_locomo
from paramem.evaluate.locomo import build_locomo
from paramem.evaluate.run import run_meta, write_results
from paramem.lifecycle.remember import remember
from paramem.model.compute import cpu_info
from paramem.model.loading import dtype_of, load_model
from paramem.read.respond import Responder
from paramem.serve.config import ServeConfig
from paramem.store.user import UserMemory

RESULTS = Path(__file__).parent / "results"
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "locomo" / "locomo8.json"


def conversation_and_question(turns: int):
    bench = build_locomo(DATA, 0, None)
    for session in bench.conversations:
        if len(session.messages) < turns:
            continue
        cut = replace(session, messages=session.messages[:turns])
        said = " ".join(m.content.lower() for m in cut.messages)
        for q in bench.open_questions:
            if q.conversation == session.id and q.category == 4 and q.answer.lower() in said:
                return cut, q
    raise SystemExit(f"no session of sample 0 has {turns} turns and a single-hop question answered in them")


def learn_below(niceness: int, conversation, config: RememberConfig, home: Path, calling) -> None:
    """`remember` in a child process, `niceness` below this one's priority, as the server runs it;
    `calling` is set just before it is called (the clock starts then, not at the child's imports)."""
    os.nice(niceness)
    calling.set()
    remember("u", [conversation], ExtractiveTeacher(), config, home)


def store_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-model", default=DEFAULT_MODEL)
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=3)
    served = ServeConfig(base_model=DEFAULT_MODEL)
    parser.add_argument("--niceness", type=int, default=served.job_niceness, help="the learning's nice")
    args = parser.parse_args()
    load_locomo(DATA)  # fails early, with the path, when the data is missing
    conversation, question = conversation_and_question(args.turns)
    base, tokenizer = load_model(args.base_model, args.dtype)
    base.eval()
    dtype = dtype_of(base)
    config = RememberConfig(base_model=args.base_model, dtype=dtype, train=TrainConfig(epochs=args.epochs))
    with tempfile.TemporaryDirectory() as scratch:
        home = Path(scratch)
        memory = UserMemory("u", home)
        spawn = multiprocessing.get_context("spawn")
        calling = spawn.Event()
        learned = spawn.Process(target=learn_below, args=(args.niceness, conversation, config, home, calling))
        learned.start()
        calling.wait()
        start = time.perf_counter()
        while conversation.id not in memory.texts.ids():
            time.sleep(0.01)
        indexed = time.perf_counter() - start
        [response] = Responder(base, tokenizer, memory.texts.conversations()).respond([question.question])
        answered = time.perf_counter() - start
        cold_start = time.perf_counter()  # after the warm answer, so the two do not share the CPU
        paramem = str(Path(sys.executable).parent / "paramem")
        cold_output = subprocess.run(
            [paramem, "ask", "--user", "u", "--home", str(home), question.question],
            capture_output=True,
            text=True,
        ).stdout
        answered_cold = time.perf_counter() - cold_start
        again = time.perf_counter()  # the same answer once more, the learning surely past its loading
        Responder(base, tokenizer, memory.texts.conversations()).respond([question.question])
        answered_while_learning = time.perf_counter() - again
        learned.join()
        if learned.exitcode != 0:
            raise SystemExit(f"the learning process failed (exit code {learned.exitcode})")
        consolidated = time.perf_counter() - start
        modes = {"always": store_bytes(memory.root)}
        for mode in ("until-consolidated", "never"):
            other = UserMemory(mode, home)
            quick = replace(config, keep_text=mode, train=TrainConfig(epochs=1))
            remember(mode, [conversation], ExtractiveTeacher(), quick, home)
            modes[mode] = store_bytes(other.root)
    result = {
        **run_meta(sys.argv, args.base_model, {"locomo": str(DATA)}, dtype),
        "conversation": conversation.id,
        "turns": len(conversation.messages),
        "question": question.question,
        "gold": question.answer,
        "learning_niceness": args.niceness,
        "answer": response.answer,
        "abstained": response.abstained,
        "evidence": [e.conversation for e in response.evidence],
        "cold_answer": cold_output.strip().splitlines()[:1],
        "seconds": {
            "indexed": round(indexed, 3),
            "answered_warm": round(answered, 2),
            "answered_cold": round(answered_cold, 2),
            "answered_warm_while_learning": round(answered_while_learning, 2),
            "consolidated": round(consolidated, 1),
        },
        "bytes_per_user": modes,
    }
    print(json.dumps({k: result[k] for k in ("question", "gold", "answer", "seconds", "bytes_per_user")}, indent=1))
    print(f"CPU: {cpu_info()}; dtype {dtype}")
    write_results(RESULTS / f"answerable-{args.base_model}-{dtype}.json", result)


if __name__ == "__main__":
    main()
