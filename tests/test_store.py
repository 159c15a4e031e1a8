import dataclasses
import sqlite3

import pytest
from peft import PeftModel

from paramem.augment.notes import Notes, Topic
from paramem.errors import InputError
from paramem.models import tiny_model
from paramem.store import LearnedConversation, UserLocked, UserMemory, now_iso
from paramem.train import TrainConfig, attach_lora


def record(cid, version):
    return LearnedConversation(cid, f"hash-{cid}", None, 10, 3, 0.5, 0.75, 1.0, version, now_iso())


def notes(cid):
    return Notes(cid, None, [Topic("cats")], [], [Topic("dogs")])


def test_commit_writes_a_peft_folder_and_the_manifest(isolated_home):
    model = attach_lora(tiny_model()[0], TrainConfig())
    with UserMemory("alice") as memory:
        memory.commit(model, record("c1", 1), notes("c1"), text=None)
        memory.commit(model, record("c2", 2), notes("c2"), text="user: hi")
    assert [c.id for c in memory.learned()] == ["c1", "c2"]
    assert memory.learned()[0].heldout_accuracy == 0.75
    assert [n.conversation_id for n in memory.notes()] == ["c1", "c2"]
    assert (memory.adapter_dir / "adapter_config.json").exists()
    assert [p.name for p in (memory.root / "versions").iterdir()] == ["2"]  # old versions dropped
    reloaded = PeftModel.from_pretrained(tiny_model()[0], str(memory.adapter_dir))
    assert any("lora_A" in n for n, _ in reloaded.named_parameters())


def test_the_learning_rate_is_recorded_and_older_manifests_gain_the_column(isolated_home):
    old = isolated_home / "users" / "carl"
    old.mkdir(parents=True)
    with sqlite3.connect(old / "manifest.sqlite") as db:  # the schema before learning_rate existed
        db.execute(
            "CREATE TABLE conversations (position INTEGER PRIMARY KEY, id TEXT UNIQUE NOT NULL,"
            " content_hash TEXT NOT NULL, timestamp TEXT, qa_pairs INTEGER NOT NULL, epochs INTEGER NOT NULL,"
            " final_loss REAL NOT NULL, heldout_accuracy REAL, seconds REAL NOT NULL,"
            " adapter_version INTEGER NOT NULL, learned_at TEXT NOT NULL, notes TEXT NOT NULL, text TEXT)"
        )
        db.execute(
            "INSERT INTO conversations VALUES (1, 'c0', 'h', NULL, 10, 3, 0.5, 0.75, 1.0, 1, 'then', '{}', NULL)"
        )
    model = attach_lora(tiny_model()[0], TrainConfig())
    with UserMemory("carl") as memory:
        memory.commit(model, dataclasses.replace(record("c1", 2), learning_rate=1e-3), notes("c1"), text=None)
    assert [(c.id, c.learning_rate) for c in memory.learned()] == [("c0", None), ("c1", 1e-3)]


def test_second_writer_is_refused_with_a_clear_message():
    first = UserMemory("bob").lock()
    try:
        with pytest.raises(UserLocked, match="being updated by paramem pid"):
            UserMemory("bob").lock()
    finally:
        first.unlock()
    UserMemory("bob").lock().unlock()  # free again once released


def test_unknown_and_invalid_users():
    with pytest.raises(InputError, match="unknown user 'nobody'"):
        UserMemory("nobody").require()
    with pytest.raises(InputError, match="invalid user name"):
        UserMemory("../etc")


def test_repair_points_the_link_at_the_committed_version():
    model = attach_lora(tiny_model()[0], TrainConfig())
    with UserMemory("carol") as memory:
        memory.commit(model, record("c1", 1), notes("c1"), text=None)
        model.save_pretrained(memory.root / "versions" / "2")  # a crash after writing, before the commit
        memory.repair()
    assert memory.current_adapter().name == "1"
    assert memory.adapter_dir.resolve().name == "1"
    assert not (memory.root / "versions" / "2").exists()
