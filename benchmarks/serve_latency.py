"""What serving costs: memory load time, request latency with and without memory, and how much
answers slow down while a learning job runs on the same machine (benchmarks/serve_load.py measures
many users at once).

    .venv/bin/python benchmarks/serve_latency.py [--base-model qwen2.5-0.5b] [--tokens 32] [--repeats 5]

Makes three users in a scratch home (one conversation each, one epoch: the content does not matter
here), serves them in-process through FastAPI's test client, and times:
  load     a memory read from disk into the server (first request, or after LRU eviction)
  latency  a chat completion of --tokens tokens: base model, memory (cached), and memory while a
           learning job (an upload) runs in the background
Prints the figures and writes benchmarks/results/serve_latency-<model>.json, naming the CPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
DEMO = Path(__file__).resolve().parents[1] / "src" / "paramem" / "demo_data" / "conversations.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-model", default=None)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    from fastapi.testclient import TestClient

    from paramem.augment.teachers.extractive import ExtractiveTeacher
    from paramem.config import DEFAULT_MODEL, PairConfig, RememberConfig, TrainConfig
    from paramem.data.formats import load_conversations
    from paramem.evaluate.run import run_meta
    from paramem.lifecycle.remember import remember
    from paramem.serve.app import create_app
    from paramem.serve.config import ServeConfig
    from paramem.serve.server import MemoryServer
    from paramem.store.user import UserMemory

    base = args.base_model or DEFAULT_MODEL
    home = Path(tempfile.mkdtemp(prefix="paramem-serve-"))
    conversations = load_conversations(DEMO)
    quick = RememberConfig(base_model=base, train=TrainConfig(epochs=1, pairs=PairConfig(max_pairs=8)))
    tokens = {}
    for name, conversation in zip(("ann", "ben", "cat"), conversations):
        remember(name, [conversation], ExtractiveTeacher(), quick, home)
        with UserMemory(name, home) as memory:
            tokens[name] = memory.tokens.new()
    server = MemoryServer(ServeConfig(base, home, cache_size=8, max_new_tokens=args.tokens))
    client = TestClient(create_app(server))
    question = [{"role": "user", "content": "What did we talk about last time?"}]

    def ask(user: str, model: str) -> float:
        start = time.perf_counter()
        response = client.post(
            "/v1/chat/completions",
            headers={"Authorization": f"Bearer {tokens[user]}"},
            json={"model": model, "messages": question, "max_tokens": args.tokens},
        )
        response.raise_for_status()
        return time.perf_counter() - start

    figures: dict[str, list[float]] = {"load": [], "base": [], "memory": [], "memory_while_learning": []}
    for user in tokens:  # first requests: each memory read from disk, on the engine's thread
        start = time.perf_counter()
        server.engine.call(lambda memories, user=user: memories.acquire(("plum", user))).result()
        figures["load"].append(time.perf_counter() - start)
    for _ in range(args.repeats):
        figures["base"].append(ask("ann", base))
        figures["memory"].append(ask("ann", "paramem:ann"))
    upload = "".join(
        json.dumps(
            {
                "id": c.id,
                "timestamp": c.timestamp,
                "messages": [{"role": m.role, "content": m.content} for m in c.messages],
            }
        )
        + "\n"
        for c in conversations[3:6]
    )
    # Asked throughout the job's life (its model load included), then the job is let finish: a
    # learning thread left running at exit would abort the interpreter.
    job = server.jobs.submit_upload("ben", upload.encode())
    started = time.perf_counter()
    while server.jobs.status("ben", job["job"])["state"] in ("queued", "running"):
        if len(figures["memory_while_learning"]) < 4 * args.repeats:
            figures["memory_while_learning"].append(ask("ann", "paramem:ann"))
        else:
            time.sleep(1)
    job_seconds = time.perf_counter() - started
    summary = {k: {"median_s": round(statistics.median(v), 4), "n": len(v)} for k, v in figures.items() if v}
    for name, row in summary.items():
        print(f"{name:22s} {row['median_s']:8.3f} s (median of {row['n']})")
    print(f"the learning job (3 conversations) took {job_seconds:.0f} s")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"serve_latency-{base}.json"
    dtype = str(server.memories.base.dtype).removeprefix("torch.")
    meta = run_meta(sys.argv, base, {"conversations": str(DEMO)}, dtype)
    out.write_text(
        json.dumps({**meta, "tokens": args.tokens, "figures": summary, "job_seconds": round(job_seconds, 1)}, indent=1),
        encoding="utf-8",
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
