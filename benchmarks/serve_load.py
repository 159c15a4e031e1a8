"""Many users at once against `paramem serve`, on loopback: leaks, hangs, server errors, latency and
what batching buys.

    .venv/bin/python benchmarks/serve_load.py [--base-model qwen2.5-0.5b] [--users 8] [--cache 4]
                                              [--minutes 4] [--tokens 16]

Set-up, in a scratch home:
  - each user learns one demo conversation (a quick recipe: one epoch of 8 pairs) as their memory
    `paramem:<user>`; uploads and forgets later use the same recipe;
  - each user gets a canary memory as `paramem-milp:<user>`: a rank-1 LoRA on the vocabulary head whose
    A row is the mean direction of the model's final hidden states and whose B column adds a large
    logit to one word of their own (" walrus", " violin", ...) and no other. Every reply of a canary
    memory is then that word, over and over, and a reply that continued on another user's adapter for
    even one token would show that user's word. The plain memories hold no canary word at all.

Phases, one server (uvicorn on 127.0.0.1, in this process):
  1. alone     one user's plain chats with nothing else running: the latency baseline;
  2. batching  every user's memory asked a different question at once, decoded one at a time
               (`max_batch` 1), then in batches: wall time of each, and whether every reply is the
               one its user got alone (greedy decoding);
  3. load      for --minutes, every user at once: streamed and plain chats to both memories (each
               followed by a pause of 0 to 2 x --think seconds, as a person reads a reply), a recall
               every third round, and in a lane of their own an upload, its learning, then a forget
               of it, over and over.

Counted: leaks (a reply naming another user's canary), hangs (a request with no byte for 30 s), 5xx,
and p50/p99 latency of each kind. Prints the CPU and dtype; writes
benchmarks/results/serve_load-<model>-<dtype>.json (--minutes 0: the first two phases only).
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

RESULTS = Path(__file__).parent / "results"
DEMO = Path(__file__).resolve().parents[1] / "src" / "paramem" / "demo_data" / "conversations.jsonl"
# Words no demo conversation uses, so no learned memory has a reason to say them; those the tokenizer
# keeps whole become the canaries.
CANARY_WORDS = [" walrus", " violin", " cactus", " tulip", " glacier", " lantern", " falcon", " pepper", " anchor",
                " marble", " meadow", " rocket", " banana", " dragon", " pirate", " wizard", " zebra", " giraffe",
                " penguin", " dolphin", " tiger", " volcano", " piano", " castle", " jungle", " tornado",
                " magnet", " cobalt", " saffron", " comet", " lobster"]  # fmt: skip
QUESTIONS = [
    "What did I plant on my balcony?",
    "Where am I moving for the new job?",
    "What did we say about my sister's wedding?",
    "Which book was I reading last month?",
    "What was wrong with my bike?",
    "What did I cook for the party?",
    "How is my running training going?",
    "What did I decide about the apartment?",
]
HANG_SECONDS = 30


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


def canary_adapter(model, tokenizer, token_id: int, samples: list[str]):
    """A peft model whose one rank-1 LoRA on the head makes `token_id` win at every step."""
    import torch
    from peft import LoraConfig, get_peft_model

    with torch.inference_mode():
        hidden = []
        for text in samples:
            ids = tokenizer(text, return_tensors="pt")["input_ids"]
            hidden.append(model(input_ids=ids, output_hidden_states=True).hidden_states[-1][0].float())
        states = torch.cat(hidden)
    # A direction every hidden state leans along: the mean, pushed towards the states it misses (a
    # perceptron). Where a state still leans away, the canary merely fails to win that step; a leak is
    # still caught, since no other user's word can come from this adapter.
    states = states / states.norm(dim=1, keepdim=True)
    direction = states.mean(0)
    for _ in range(200):
        missed = states[states @ direction <= 0.05]
        if len(missed) == 0:
            break
        direction = direction + missed.mean(0)
    direction = direction / direction.norm()
    projections = states @ direction
    covered = (projections > 0).float().mean().item()
    typical = projections[projections > 0].quantile(0.1).item() * float(torch.cat(hidden).norm(dim=1).median())
    peft = get_peft_model(model, LoraConfig(r=1, lora_alpha=1, target_modules=["lm_head"], lora_dropout=0.0))
    # peft saves the whole (tied) vocabulary matrix beside a LoRA on the head unless told not to
    peft.save_pretrained = functools.partial(peft.save_pretrained, save_embedding_layers=False)
    layer = peft.base_model.model.lm_head
    with torch.no_grad():
        layer.lora_A["default"].weight.copy_(direction[None].to(layer.lora_A["default"].weight.dtype))
        column = torch.zeros_like(layer.lora_B["default"].weight)
        column[token_id, 0] = 60.0 / typical  # +60 logits on its word for nine in ten hidden states
        layer.lora_B["default"].weight.copy_(column)
    return peft, covered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-model", default=None)
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--cache", type=int, default=4, help="memories kept loaded (below 2 x users: churn)")
    parser.add_argument("--minutes", type=float, default=4.0)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--think", type=float, default=2.0, help="mean seconds a user waits between requests")
    parser.add_argument("--dtype", default=None, help="the server's dtype (default: the one paramem picks here)")
    args = parser.parse_args()

    import uvicorn

    from paramem.augment.teachers.extractive import ExtractiveTeacher
    from paramem.config import DEFAULT_MODEL, PairConfig, RememberConfig, TrainConfig
    from paramem.data.formats import load_conversations
    from paramem.evaluate.run import run_meta, write_results
    from paramem.lifecycle.remember import remember
    from paramem.model.compute import cpu_info
    from paramem.model.loading import load_model
    from paramem.read.loading import load_memory
    from paramem.read.recall import recollections
    from paramem.serve.app import create_app
    from paramem.serve.config import ServeConfig
    from paramem.serve.server import MemoryServer
    from paramem.store.user import UserMemory

    base = args.base_model or DEFAULT_MODEL
    home = Path(tempfile.mkdtemp(prefix="paramem-load-"))
    conversations = load_conversations(DEMO)
    names = [f"user{i}" for i in range(args.users)]
    quick = RememberConfig(
        base_model=base, dtype=args.dtype, train=TrainConfig(epochs=1, min_epochs=1, pairs=PairConfig(max_pairs=8))
    )
    model, tokenizer = load_model(base, args.dtype)
    words = [w for w in CANARY_WORDS if len(tokenizer(w, add_special_tokens=False)["input_ids"]) == 1]
    assert len(words) >= args.users, f"only {len(words)} canary words are one token in this tokenizer"
    said = " ".join(m.content for c in conversations for m in c.messages).lower()
    assert not [w for w in words if w.strip() in said], "a canary word is in the demo conversations"
    canaries = dict(zip(names, words))
    tokens, started = {}, time.perf_counter()
    samples = [m.content for c in conversations[:4] for m in c.messages[:2]] + QUESTIONS
    for i, name in enumerate(names):
        remember(name, [conversations[i % len(conversations)]], ExtractiveTeacher(), quick, home)
        recollections(*load_memory(name, home, args.dtype))  # as an upload's job leaves a version
        token_id = tokenizer(canaries[name], add_special_tokens=False)["input_ids"][0]
        fresh = load_model(base, str(model.dtype).removeprefix("torch."))[0]
        adapter, covered = canary_adapter(fresh, tokenizer, token_id, samples)
        with UserMemory(name, home) as memory:
            memory.milp.commit(
                adapter.save_pretrained,
                {"base_model": base, "dtype": str(model.dtype), "memory": {}, "described": f"canary{canaries[name]}",
                 "conversations": []},
            )  # fmt: skip
            tokens[name] = memory.tokens.new()
        took = time.perf_counter() - started
        print(f"set up {name} ({canaries[name].strip()}, {covered:.0%} of sample states covered) after {took:.0f} s")
    del model

    config = ServeConfig(
        base, home, cache_size=args.cache, max_new_tokens=max(64, args.tokens), max_batch=8, dtype=args.dtype
    )
    server = MemoryServer(config)
    dtype = str(server.memories.base.dtype).removeprefix("torch.")
    uv = uvicorn.Server(uvicorn.Config(create_app(server), host="127.0.0.1", port=0, log_level="warning"))
    serving = threading.Thread(target=uv.run, daemon=True)
    serving.start()
    while not uv.started:
        time.sleep(0.1)
    port = uv.servers[0].sockets[0].getsockname()[1]
    api = f"http://127.0.0.1:{port}/v1"
    timeout = httpx.Timeout(connect=10, read=HANG_SECONDS, write=30, pool=None)

    def chat(name: str, model: str, question: str, stream: bool, max_tokens: int = args.tokens):
        """(seconds, text, status); text None for a hang or a transport error."""
        body = {"model": model, "messages": [{"role": "user", "content": question}], "max_tokens": max_tokens}
        headers = {"Authorization": f"Bearer {tokens[name]}"}
        start = time.perf_counter()
        try:
            if not stream:
                response = httpx.post(f"{api}/chat/completions", json={**body}, headers=headers, timeout=timeout)
                text = response.json()["choices"][0]["message"]["content"] if response.status_code == 200 else ""
                return time.perf_counter() - start, text, response.status_code
            pieces = []
            with httpx.stream("POST", f"{api}/chat/completions", json={**body, "stream": True}, headers=headers,
                              timeout=timeout) as response:  # fmt: skip
                if response.status_code != 200:
                    response.read()
                    return time.perf_counter() - start, "", response.status_code
                for line in response.iter_lines():
                    if line.startswith("data: {"):
                        delta = json.loads(line[6:]).get("choices", [{}])[0].get("delta", {})
                        pieces.append(delta.get("content") or "")
            return time.perf_counter() - start, "".join(pieces).strip(), 200
        except httpx.ReadTimeout:
            return time.perf_counter() - start, None, "hang"

    # 1. alone
    alone = [chat(names[0], f"paramem-milp:{names[0]}", QUESTIONS[0], False)[0] for _ in range(8)]
    alone += [chat(names[0], f"paramem:{names[0]}", QUESTIONS[0], False)[0] for _ in range(8)]

    # 2. batching: each user's own memory, its own question, 32 tokens
    def everyone_at_once() -> tuple[float, dict[str, str]]:
        replies: dict[str, str] = {}

        def ask(i, name):
            replies[name] = chat(name, f"paramem:{name}", QUESTIONS[i % len(QUESTIONS)], False, 32)[1]

        threads = [threading.Thread(target=ask, args=(i, n)) for i, n in enumerate(names)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return time.perf_counter() - start, replies

    server.memories.cache_size = 2 * args.users  # every memory loaded: the phase times decoding, not loading
    everyone_at_once()  # warm: every memory loaded
    server.engine.max_batch = 1
    serial_seconds, serial = everyone_at_once()
    server.engine.max_batch = 8
    row_steps_before, steps_before = server.engine.row_steps, server.engine.steps
    batched_seconds, batched = everyone_at_once()
    batch_rows = (server.engine.row_steps - row_steps_before) / max(1, server.engine.steps - steps_before)
    same = sum(serial[n] == batched[n] for n in names)
    server.memories.cache_size = args.cache
    print(f"batching: {args.users} users one at a time {serial_seconds:.1f} s, batched {batched_seconds:.1f} s "
          f"({batch_rows:.1f} rows a step); replies identical to alone: {same}/{args.users}", flush=True)  # fmt: skip

    # 3. load
    stats: dict[str, list[float]] = {k: [] for k in ("stream", "plain", "recall", "upload", "forget")}
    counts = {"requests": 0, "leaks": 0, "hangs": 0, "server_errors": 0, "other_errors": 0, "jobs_done": 0,
              "jobs_failed": 0, "jobs_unfinished": 0, "canary_replies": 0, "canary_asked": 0}  # fmt: skip
    leaks: list[dict] = []
    lock = threading.Lock()
    stop_at = time.time() + 60 * args.minutes

    statuses: dict[str, int] = {}

    def record(kind: str, seconds: float, status, name: str, text: str | None, model: str) -> None:
        with lock:
            counts["requests"] += 1
            statuses[f"{kind} {status}"] = statuses.get(f"{kind} {status}", 0) + 1
            if status == "hang":
                counts["hangs"] += 1
                return
            if isinstance(status, int) and status >= 500:
                counts["server_errors"] += 1
            elif isinstance(status, int) and status >= 400:
                counts["other_errors"] += 1
            else:
                stats[kind].append(seconds)
            if model.startswith("paramem-milp:"):  # the canary memory: its own word should win
                counts["canary_asked"] += 1
                counts["canary_replies"] += bool(text and canaries[name].strip() in text)
            for other, word in canaries.items():
                if other != name and text and re.search(rf"\b{word.strip()}\b", text, re.IGNORECASE):
                    counts["leaks"] += 1
                    leaks.append({"user": name, "model": model, "named": other, "reply": text[:200]})

    def talker(i: int, name: str) -> None:
        turn, pause = 0, random.Random(i)
        while time.time() < stop_at:
            for model, stream in ((f"paramem-milp:{name}", True), (f"paramem:{name}", False),
                                  (f"paramem-milp:{name}", False), (f"paramem:{name}", True)):  # fmt: skip
                seconds, text, status = chat(name, model, QUESTIONS[(i + turn) % len(QUESTIONS)], stream)
                record("stream" if stream else "plain", seconds, status, name, text, model)
                time.sleep(pause.uniform(0, 2 * args.think))  # reading the reply
            turn += 1
            if turn % 3 == 0:
                start = time.perf_counter()
                try:
                    auth = {"Authorization": f"Bearer {tokens[name]}"}
                    response = httpx.get(f"{api}/memory/recollections", headers=auth, timeout=timeout)
                    text = " ".join(r["text"] for r in response.json().get("recollections", []))
                    record("recall", time.perf_counter() - start, response.status_code, name, text, "recall")
                except httpx.ReadTimeout:
                    record("recall", time.perf_counter() - start, "hang", name, None, "recall")

    def job_lane(i: int, name: str) -> None:
        headers = {"Authorization": f"Bearer {tokens[name]}"}
        conversation = conversations[(i + 1) % len(conversations)]  # not the one it learned at the start
        messages = [{"role": m.role, "content": m.content} for m in conversation.messages]
        line = json.dumps({"id": f"load-{conversation.id}", "timestamp": conversation.timestamp, "messages": messages})

        def run(kind: str, response) -> bool:
            with lock:
                counts["requests"] += 1
                statuses[f"{kind} {response.status_code}"] = statuses.get(f"{kind} {response.status_code}", 0) + 1
            if response.status_code >= 500:
                with lock:
                    counts["server_errors"] += 1
                return False
            if response.status_code >= 400:  # 429: the job queue is full; try later
                with lock:
                    counts["other_errors"] += 1
                time.sleep(5)
                return False
            job, start = response.json()["job"], time.perf_counter()
            while time.time() < stop_at + 60:  # a job still waiting a minute after the end: unfinished
                state = httpx.get(f"{api}/memory/jobs/{job}", headers=headers, timeout=timeout).json()["state"]
                if state in ("done", "failed"):
                    with lock:
                        counts["jobs_done" if state == "done" else "jobs_failed"] += 1
                        stats[kind].append(time.perf_counter() - start)
                    return state == "done"
                time.sleep(1)
            with lock:
                counts["jobs_unfinished"] += 1
            return False

        while time.time() < stop_at:
            if run("upload", httpx.post(f"{api}/memory/conversations", content=line + "\n", headers=headers,
                                        timeout=timeout)):  # fmt: skip
                run("forget", httpx.delete(f"{api}/memory/conversations/load-{conversation.id}", headers=headers,
                                           timeout=timeout))  # fmt: skip

    threads = [threading.Thread(target=talker, args=(i, n)) for i, n in enumerate(names)]
    threads += [threading.Thread(target=job_lane, args=(i, n)) for i, n in enumerate(names)]
    load_started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    load_seconds = time.perf_counter() - load_started
    uv.should_exit = True
    serving.join(60)  # its shutdown stops the engine and the jobs

    latency = {k: {"n": len(v), "p50_s": percentile(v, 0.5), "p99_s": percentile(v, 0.99)} for k, v in stats.items()}
    result = {
        **run_meta(sys.argv, base, {"conversations": str(DEMO)}, dtype),
        "users": args.users,
        "cache": args.cache,
        "tokens": args.tokens,
        "think_s": args.think,
        "canaries": {n: w.strip() for n, w in canaries.items()},
        "alone": {"n": len(alone), "p50_s": percentile(alone, 0.5), "p99_s": percentile(alone, 0.99)},
        "batching": {
            "serial_s": round(serial_seconds, 2),
            "batched_s": round(batched_seconds, 2),
            "speedup": round(serial_seconds / batched_seconds, 2),
            "rows_per_step": round(batch_rows, 2),
            "identical_to_alone": same,
            "differing": {n: [serial[n], batched[n]] for n in names if serial[n] != batched[n]},
        },
        "load": {
            "seconds": round(load_seconds, 1),
            **counts,
            "latency": latency,
            "statuses": statuses,
            "leak_examples": leaks[:5],
        },
    }
    print(f"CPU: {cpu_info()}; dtype {dtype}")
    print(f"alone: p50 {result['alone']['p50_s']} s, p99 {result['alone']['p99_s']} s ({args.tokens} tokens)")
    print(f"load, {load_seconds:.0f} s: {counts}")
    print(f"  statuses: {dict(sorted(statuses.items()))}")
    for kind, row in latency.items():
        print(f"  {kind:7s} n={row['n']:4d}  p50 {row['p50_s']} s  p99 {row['p99_s']} s")
    write_results(RESULTS / f"serve_load-{base}-{dtype}.json", result)


if __name__ == "__main__":
    main()
