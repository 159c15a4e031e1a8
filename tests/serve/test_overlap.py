"""Requests that overlap: the server never freezes, never answers one user from another's memory,
and a request cancelled or superseded leaves no trace on the others (issue 36, defects 1-4)."""

import threading
import time

import httpx
import pytest
from openai import OpenAI
from serve_helpers import PLAIN, QUESTION, expected

from paramem.augment.teachers.extractive import ExtractiveTeacher
from paramem.lifecycle.forget import forget
from paramem.lifecycle.remember import remember
from paramem.serve.engine import Engine

CHAT = [{"role": "user", "content": QUESTION}]


@pytest.fixture
def slow(monkeypatch):
    """Each decoded token takes 50 ms more, as a real model's would: long enough for requests to overlap."""
    grow = Engine._grow

    def slow_grow(self, reply, token):
        time.sleep(0.05)
        grow(self, reply, token)

    monkeypatch.setattr(Engine, "_grow", slow_grow)


def ask(url, token, model, tokens=16, stream=False):
    client = OpenAI(base_url=url, api_key=token, timeout=60, max_retries=0)
    reply = client.chat.completions.create(model=model, messages=CHAT, max_tokens=tokens, stream=stream)
    if stream:
        return "".join(c.choices[0].delta.content or "" for c in reply).strip()
    return reply.choices[0].message.content


def test_a_plain_chat_during_a_stream_freezes_nothing(served, slow):
    server, url, tokens = served
    results = {}
    streaming = threading.Thread(
        target=lambda: results.update(stream=ask(url, tokens["alice"], "paramem:alice", stream=True))
    )
    streaming.start()
    time.sleep(0.3)  # the stream is decoding
    plain = threading.Thread(target=lambda: results.update(plain=ask(url, tokens["bob"], "paramem:bob")))
    plain.start()
    started = time.perf_counter()
    listed = httpx.get(f"{url}/models", headers={"Authorization": f"Bearer {tokens['bob']}"}, timeout=5)
    assert listed.status_code == 200 and time.perf_counter() - started < 2  # the event loop is free
    streaming.join(30)
    plain.join(30)
    assert results == {"stream": expected("alice"), "plain": expected("bob")}


def test_forty_waiting_streams_leave_the_server_answering(served, slow):
    server, url, tokens = served
    answers = {name: expected(name, tokens=4) for name in ("alice", "bob")}  # here: the tiny model's seed is global
    done = []

    def stream(i):
        name = ("alice", "bob")[i % 2]
        done.append(ask(url, tokens[name], f"paramem:{name}", tokens=4, stream=True) == answers[name])

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    started = time.perf_counter()
    listed = httpx.get(f"{url}/models", headers={"Authorization": f"Bearer {tokens['alice']}"}, timeout=5)
    assert listed.status_code == 200 and time.perf_counter() - started < 2
    for t in threads:
        t.join(120)
    assert done == [True] * 40
    assert server.engine.row_steps > 2 * server.engine.steps  # decoded together: several rows a step


def test_with_an_lru_of_one_concurrent_users_each_get_their_own_memory(served, slow):
    server, url, tokens = served
    server.memories.cache_size = 1
    answers = {name: expected(name) for name in tokens}
    got = {name: [] for name in tokens}

    def user(name):
        for i in range(3):
            got[name].append(ask(url, tokens[name], f"paramem:{name}", stream=bool(i % 2)))

    threads = [threading.Thread(target=user, args=(name,)) for name in tokens]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert got == {name: [answers[name]] * 3 for name in tokens}
    assert len(server.loaded) <= 1


def test_a_reply_keeps_its_version_when_a_newer_one_is_committed_under_it(served, slow, demo_conversations):
    server, url, tokens = served
    before = expected("alice")
    result = {}
    reading = threading.Thread(target=lambda: result.update(reply=ask(url, tokens["alice"], "paramem:alice")))
    reading.start()
    time.sleep(0.3)
    remember("alice", demo_conversations[3:4], ExtractiveTeacher(), PLAIN)  # as an upload's job commits
    reading.join(60)
    assert result["reply"] == before  # the whole reply from the version it started with
    assert ask(url, tokens["alice"], "paramem:alice") == expected("alice") != before  # the next one: the new


def test_a_memory_forgotten_whole_and_learned_again_is_never_served_from_the_cache(served, demo_conversations):
    server, url, tokens = served
    first = ask(url, tokens["alice"], "paramem:alice")  # version 1, now in the LRU
    forget("alice", demo_conversations[0].id)  # nothing left: the old code's next version was 1 again
    remember("alice", demo_conversations[5:6], ExtractiveTeacher(), PLAIN)
    again = ask(url, tokens["alice"], "paramem:alice")
    assert again == expected("alice") and again != first


def test_a_client_gone_mid_stream_stops_its_generation_within_a_step(served, slow):
    server, url, tokens = served
    server.config.max_new_tokens = 200
    body = {"model": "paramem:alice", "messages": CHAT, "max_tokens": 200, "stream": True}
    headers = {"Authorization": f"Bearer {tokens['alice']}"}
    with httpx.stream("POST", f"{url}/chat/completions", json=body, headers=headers, timeout=30) as response:
        for _ in zip(range(3), response.iter_lines()):
            pass
    # 200 tokens take 10 s here; the row must be gone well before
    end = time.time() + 3
    while server.engine.running and time.time() < end:
        time.sleep(0.05)
    assert not server.engine.running
    assert ask(url, tokens["bob"], "paramem:bob") == expected("bob")  # and the next user is served right


def test_a_stream_opens_at_once_even_while_the_model_is_busy(served, slow):
    server, url, tokens = served
    busy = threading.Thread(target=lambda: ask(url, tokens["bob"], "paramem:bob"))
    busy.start()  # 16 slow tokens: the engine is busy for about a second
    time.sleep(0.2)
    body = {"model": "paramem:alice", "messages": CHAT, "max_tokens": 4, "stream": True}
    started = time.perf_counter()
    headers = {"Authorization": f"Bearer {tokens['alice']}"}
    with httpx.stream("POST", f"{url}/chat/completions", json=body, headers=headers, timeout=30) as response:
        lines = response.iter_lines()
        first = next(lines)
        assert time.perf_counter() - started < 0.5 and '"role": "assistant"' in first
        rest = list(lines)
    assert "data: [DONE]" in rest
    busy.join(30)


def test_a_reply_arriving_mid_generation_joins_the_batch_and_ends_first(served, slow):
    server, url, tokens = served
    server.config.max_new_tokens = 200
    short = expected("bob", tokens=4)
    long_done = threading.Event()
    body = {"model": "paramem:alice", "messages": CHAT, "max_tokens": 200, "stream": True}

    def long_stream():
        headers = {"Authorization": f"Bearer {tokens['alice']}"}
        with httpx.stream("POST", f"{url}/chat/completions", json=body, headers=headers, timeout=60) as response:
            for _ in response.iter_lines():
                pass
        long_done.set()

    reading = threading.Thread(target=long_stream)
    reading.start()
    end = time.time() + 10
    while not server.engine.running and time.time() < end:
        time.sleep(0.02)
    assert server.engine.running and len(server.engine.running[0].ids) < 50
    # batched by the whole batch, bob would wait for alice's 200 tokens (10 s); joining, for 4 steps
    assert ask(url, tokens["bob"], "paramem:bob", tokens=4) == short
    assert not long_done.is_set()
    reading.join(60)


def test_sequential_and_cartridge_memories_decode_in_one_batch_each_as_alone(served, slow, monkeypatch):
    server, url, tokens = served
    server.memories.cache_size = 3
    server.engine.prefill_wait = 0  # each joins at the next step: the three replies overlap for sure
    answers = {name: expected(name) for name in tokens}
    widest = []
    changed = Engine._rows_changed

    def watch(self, starting=()):
        changed(self, starting)
        widest.append(len({row.loaded.identity for row in self.rows}))

    monkeypatch.setattr(Engine, "_rows_changed", watch)
    got = {}
    threads = [
        threading.Thread(target=lambda n=name: got.update({n: ask(url, tokens[n], f"paramem:{n}")})) for name in tokens
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert got == answers
    assert max(widest) == 3  # alice's adapter, bob's and carol's cartridges read in the same steps


def test_replies_arriving_while_others_decode_read_their_prompts_in_one_pass(served, slow, monkeypatch):
    server, url, tokens = served
    server.config.max_new_tokens = 200
    server.engine.prefill_wait = 1.0
    server.memories.cache_size = 3  # room for all three memories at once
    answers = {name: expected(name, tokens=4) for name in ("alice", "bob")}
    groups = []
    prefill = Engine._prefill
    monkeypatch.setattr(Engine, "_prefill", lambda self, group: groups.append(len(group)) or prefill(self, group))
    long = threading.Thread(target=lambda: ask(url, tokens["carol"], "paramem:carol", tokens=60))
    long.start()
    while not server.engine.running:
        time.sleep(0.02)
    got = {}
    threads = [
        threading.Thread(target=lambda n=name: got.update({n: ask(url, tokens[n], f"paramem:{n}", tokens=4)}))
        for name in answers
    ]
    for t in threads:
        t.start()
    for t in threads + [long]:
        t.join(120)
    assert got == answers  # each as alone
    assert groups == [1, 2]  # carol alone at first; alice and bob together, not one prompt per step
