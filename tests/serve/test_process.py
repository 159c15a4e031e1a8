"""`paramem serve` as a process: options checked before any work, SIGTERM obeyed within seconds, and a
`kill -9` at any moment losing nothing committed (issue 36, defects 1 and 11, and the kill tests)."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest
from serve_helpers import PLAIN, QUESTION

from paramem.augment.teachers.extractive import ExtractiveTeacher
from paramem.lifecycle.remember import remember
from paramem.store.user import UserMemory

PARAMEM = [sys.executable, "-c", "from paramem.cli.main import app; app()"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve(port: int) -> subprocess.Popen:
    """`paramem serve` on the tiny model, in its own process group, once it answers."""
    server = subprocess.Popen(
        [*PARAMEM, "serve", "--base-model", "tiny", "--port", str(port), "--max-tokens", "64"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    end = time.time() + 120
    while time.time() < end:
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
            return server
        except httpx.TransportError:
            assert server.poll() is None, server.stderr.read().decode()
            time.sleep(0.2)
    raise AssertionError("the server did not start")


def chat(port, token, model, stream=False, timeout=60):
    body = {"model": model, "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 64, "stream": stream}
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body, headers=headers, timeout=timeout)


@pytest.fixture
def alice(demo_conversations, isolated_home):
    remember("alice", demo_conversations[:2], ExtractiveTeacher(), PLAIN)
    with UserMemory("alice") as memory:
        return memory.tokens.new()


def test_a_bad_option_or_a_taken_port_is_one_line_and_exit_2_before_any_work(isolated_home):
    started = time.perf_counter()
    bad = subprocess.run([*PARAMEM, "serve", "--base-model", "tiny", "--port", "70000"], capture_output=True, text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "65535" in bad.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = subprocess.run(
            [*PARAMEM, "serve", "--base-model", "tiny", "--port", str(port)], capture_output=True, text=True
        )
    assert busy.returncode == 2 and "Traceback" not in busy.stderr and f"{port}" in busy.stderr
    cache = subprocess.run([*PARAMEM, "serve", "--base-model", "tiny", "--cache", "0"], capture_output=True, text=True)
    assert cache.returncode == 2 and "cache_size" in cache.stderr
    assert time.perf_counter() - started < 60


def test_sigterm_with_streams_in_flight_stops_the_server_within_seconds(alice):
    port = free_port()
    server = serve(port)
    threads = [
        threading.Thread(target=lambda: _ignore(lambda: chat(port, alice, "paramem:alice", stream=True)))
        for _ in range(12)
    ]
    for t in threads:
        t.start()
    time.sleep(0.5)
    started = time.perf_counter()
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=15)
    assert time.perf_counter() - started < 10


def _ignore(call):
    try:
        call()
    except httpx.HTTPError:
        pass


def test_kill_9_during_an_upload_a_forget_and_a_stream_loses_nothing(alice, demo_conversations, isolated_home):
    port = free_port()
    server = serve(port)
    headers = {"Authorization": f"Bearer {alice}"}
    api = f"http://127.0.0.1:{port}/v1"
    new = demo_conversations[4]
    line = json.dumps({"id": new.id, "messages": [{"role": m.role, "content": m.content} for m in new.messages]})
    upload = httpx.post(f"{api}/memory/conversations", content=line + "\n", headers=headers).json()["job"]
    forgetting = httpx.delete(f"{api}/memory/conversations/{demo_conversations[0].id}", headers=headers).json()["job"]
    streaming = threading.Thread(target=lambda: _ignore(lambda: chat(port, alice, "paramem:alice", stream=True)))
    streaming.start()
    time.sleep(0.3)
    os.killpg(server.pid, signal.SIGKILL)  # the server and nothing else: jobs run in their own sessions
    server.wait()

    server = serve(port)  # resumes the jobs; a child still running from before is waited for, not run twice
    try:
        end = time.time() + 240
        states = {}
        while time.time() < end:
            states = {
                j: httpx.get(f"{api}/memory/jobs/{j}", headers=headers).json()["state"] for j in (upload, forgetting)
            }
            if set(states.values()) <= {"done", "failed"}:
                break
            reply = chat(port, alice, "paramem:alice")
            assert reply.status_code == 409  # the forget is pending: the conversation is not answered from
            time.sleep(0.5)
        assert states == {upload: "done", forgetting: "done"}
        learned = [r.id for r in UserMemory("alice").learned()]
        assert learned == [demo_conversations[1].id, new.id]  # committed work kept; the forgotten one gone
        assert [i for i, _ in UserMemory("alice").forgotten()] == [demo_conversations[0].id]
        assert chat(port, alice, "paramem:alice").status_code == 200
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
