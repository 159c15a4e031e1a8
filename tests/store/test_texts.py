import sqlite3
import subprocess
import sys

import pytest

from paramem.config import TrainConfig
from paramem.data.conversations import Conversation, Message
from paramem.data.notes import Notes, Topic
from paramem.errors import InputError
from paramem.memory.lora import attach_lora
from paramem.model.loading import tiny_model
from paramem.store.manifest import LearnedConversation, now_iso
from paramem.store.user import UserMemory

PLANTED = "the plastic pot had no drainage holes"


def conversation(cid: str, said: str = PLANTED) -> Conversation:
    return Conversation(cid, (Message("user", said, "Ana"), Message("assistant", "noted")), "2026-03-02T10:00:00")


def test_texts_come_back_as_they_went_in_once_each():
    with UserMemory("ana") as memory:
        assert memory.texts.add([conversation("c1"), conversation("c2", "other")]) == ["c1", "c2"]
        assert memory.texts.add([conversation("c1"), conversation("c3", "more")]) == ["c3"]
    back = memory.texts.conversations()
    assert [c.id for c in back] == ["c1", "c2", "c3"]
    assert back[0] == conversation("c1") and back[0].content_hash == conversation("c1").content_hash


def test_a_waiting_conversation_is_indexed_or_consolidating_and_a_learned_one_consolidated():
    memory = UserMemory("ana")
    with memory:
        memory.texts.add([conversation("c1"), conversation("c2", "other")])
        assert set(memory.texts.states().values()) == {"consolidating"}  # this process holds the lock
        record = LearnedConversation("c1", conversation("c1").content_hash, None, 1, 1, 0.1, None, 1.0, 1, now_iso())
        memory.commit(attach_lora(tiny_model()[0], TrainConfig()), record, Notes("c1", None, [Topic("pots")], [], []))
    assert memory.texts.states() == {"c1": "consolidated", "c2": "indexed"}
    assert [c.id for c in memory.texts.waiting()] == ["c2"]


def test_another_process_holding_the_lock_makes_waiting_texts_consolidating(isolated_home):
    with UserMemory("ana") as memory:
        memory.texts.add([conversation("c1")])
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from paramem.store.user import UserMemory;"
            "m = UserMemory('ana').lock(); print('held', flush=True); time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert UserMemory("ana").texts.states() == {"c1": "consolidating"}
    finally:
        holder.kill()
        holder.wait()
    assert UserMemory("ana").texts.states() == {"c1": "indexed"}


def test_a_commit_that_drops_the_text_leaves_no_trace_of_it_in_the_manifest():
    memory = UserMemory("ana")
    with memory:
        memory.texts.add([conversation("c1")])
        record = LearnedConversation("c1", conversation("c1").content_hash, None, 1, 1, 0.1, None, 1.0, 1, now_iso())
        memory.commit(
            attach_lora(tiny_model()[0], TrainConfig()), record, Notes("c1", None, [Topic("pots")], [], []), True
        )
    assert memory.texts.conversations() == []
    assert PLANTED.encode() not in memory.manifest.read_bytes()  # secure_delete overwrote the row


def test_forgetting_an_indexed_text_records_only_its_id():
    memory = UserMemory("ana")
    with memory:
        memory.texts.add([conversation("c1")])
        assert memory.texts.forget("c1") == conversation("c1").content_hash
    assert memory.texts.ids() == set() and [i for i, _ in memory.forgotten()] == ["c1"]
    with sqlite3.connect(memory.manifest) as db:
        assert db.execute("SELECT COUNT(*) FROM texts").fetchone() == (0,)
    assert PLANTED.encode() not in memory.manifest.read_bytes()


def test_dropping_texts_needs_the_lock_and_adding_refuses_other_content():
    memory = UserMemory("ana")
    memory.texts.add([conversation("c1")])  # beside a learning run: no lock needed
    with pytest.raises(AssertionError):
        memory.texts.drop(["c1"])
    with pytest.raises(InputError, match="'c1' is already stored with different content"):
        memory.texts.add([conversation("c2", "new"), conversation("c1", "something else")])
    assert memory.texts.ids() == {"c1"}
