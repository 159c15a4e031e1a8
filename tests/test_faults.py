"""Faults lose nothing: processes killed mid-write, a second writer, readers racing a writer."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import DEMO

from paramem.read.loading import load_memory
from paramem.store.user import UserMemory

LEARN = """
import sys
from paramem.augment.teachers.extractive import ExtractiveTeacher
from paramem.data.formats import load_conversations
from paramem.config import RememberConfig, TrainConfig
from paramem.lifecycle.remember import remember

conversations = load_conversations(sys.argv[1])
print("ready", flush=True)
remember("k", conversations, ExtractiveTeacher(), RememberConfig(base_model="tiny", train=TrainConfig(epochs=1,
         min_epochs=1, batch_size=4)))
"""


def start(script: str, *args, home: Path) -> subprocess.Popen:
    env = {**os.environ, "PARAMEM_HOME": str(home), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", script, *map(str, args)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_kill_9_at_random_points_never_loses_or_duplicates_a_conversation(isolated_home, tmp_path):
    conversations = DEMO / "conversations.jsonl"
    expected = [json.loads(line)["id"] for line in conversations.read_text().splitlines()]
    rng = random.Random(0)
    kills = 0
    while kills < 20:
        process = start(LEARN, conversations, home=isolated_home)
        assert process.stdout.readline().strip() == "ready"  # imports done: the kill lands in the work
        time.sleep(rng.uniform(0.0, 2.0))
        if process.poll() is not None:  # finished before the kill: everything is learned
            break
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        kills += 1
        memory = UserMemory("k", isolated_home)
        learned = [c.id for c in memory.learned()]
        assert learned == expected[: len(learned)]  # in order, none twice
        if learned:
            load_memory("k", isolated_home)  # the committed version always loads
    finished = start(LEARN, conversations, home=isolated_home)
    assert finished.wait(timeout=600) == 0, finished.stderr.read()
    assert [c.id for c in UserMemory("k", isolated_home).learned()] == expected
    assert kills >= 5  # the loop really did interrupt the work


HOLD_LOCK = """
import sys, time
from paramem.store.user import UserMemory
with UserMemory("w"):
    print("locked", flush=True)
    time.sleep(60)
"""


def test_a_second_writer_in_another_process_gets_the_lock_message(isolated_home):
    from typer.testing import CliRunner

    from paramem.cli.main import app

    holder = start(HOLD_LOCK, home=isolated_home)
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = CliRunner().invoke(
            app, ["remember", str(DEMO / "conversations.jsonl"), "--user", "w", "--base-model", "tiny"]
        )
        assert result.exit_code == 2
        assert f"user 'w' is being updated by paramem pid {holder.pid}" in result.stderr
    finally:
        holder.kill()
        holder.wait()


def test_a_reader_loading_while_a_writer_commits_always_gets_a_whole_version(isolated_home):
    conversations = DEMO / "conversations.jsonl"
    first = start(
        LEARN.replace(
            "conversations = load_conversations(sys.argv[1])", "conversations = load_conversations(sys.argv[1])[:1]"
        ),
        conversations,
        home=isolated_home,
    )
    assert first.wait(timeout=300) == 0, first.stderr.read()
    writer = start(LEARN, conversations, home=isolated_home)
    loads = 0
    try:
        while writer.poll() is None:
            model, _, memory = load_memory("k", isolated_home)
            assert memory.loaded_version >= 1 and any("lora_A" in n for n, _ in model.named_parameters())
            loads += 1
    finally:
        writer.wait(timeout=600)
    assert writer.returncode == 0, writer.stderr.read()
    assert loads >= 3
