"""What the server tests share (the `served` fixture is in tests/conftest.py): starting uvicorn on
127.0.0.1 in a thread, the question asked, the reply expected from a user's memory loaded alone, and
waiting for a job."""

import json
import socket
import threading
import time

import uvicorn

from paramem.config import RememberConfig, TrainConfig
from paramem.model.generate import generate
from paramem.read.loading import load_memory
from paramem.serve.app import create_app
from paramem.serve.server import MemoryServer

QUESTION = "What do you remember about my garden?"
# Kept as memory alone (no text): these tests read the adapters; test_text_side.py serves stored text.
PLAIN = RememberConfig(
    base_model="tiny", keep_text="never", train=TrainConfig(epochs=2, min_epochs=2, learning_rate=5e-3)
)


def start(server: MemoryServer):
    """uvicorn serving `server` on a free loopback port: (the uvicorn server, its thread, the API's url)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    uv = uvicorn.Server(uvicorn.Config(create_app(server), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    while not uv.started:
        time.sleep(0.05)
    return uv, thread, f"http://127.0.0.1:{port}/v1"


def expected(user, question=QUESTION, tokens=16):
    model, tokenizer, _ = load_memory(user)
    return generate(model, tokenizer, [{"role": "user", "content": question}], tokens)


def wait_for(client, url, job, seconds=120):
    end = time.time() + seconds
    while time.time() < end:
        record = client.get(f"{url}/memory/jobs/{job}").json()
        if record["state"] not in ("queued", "running"):
            return record
        time.sleep(0.2)
    raise AssertionError(f"job {job} still running")


def upload_line(conversation) -> bytes:
    """One conversation as an upload's JSONL line."""
    messages = [{"role": m.role, "content": m.content} for m in conversation.messages]
    return (
        json.dumps({"id": conversation.id, "timestamp": conversation.timestamp, "messages": messages}) + "\n"
    ).encode()


def left_job(user: str, job: str, conversation, **record) -> None:
    """An upload's job as a killed server left it: its upload and its record, with `record`'s fields."""
    from paramem.store.user import UserMemory

    folder = UserMemory(user).root / "jobs"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{job}.jsonl").write_bytes(upload_line(conversation))
    fields = {"job": job, "user": user, "kind": "learn", "state": "running", "done": 0, "total": 1, **record}
    (folder / f"{job}.json").write_text(json.dumps(fields))
