import dataclasses
import sqlite3

import pytest
from peft import PeftModel

from paramem.config import TrainConfig
from paramem.data.notes import Notes, Topic
from paramem.errors import InputError
from paramem.memory.lora import attach_lora
from paramem.model.loading import tiny_model
from paramem.store.manifest import LearnedConversation, now_iso
from paramem.store.user import UserLocked, UserMemory


def record(cid, version):
    return LearnedConversation(cid, f"hash-{cid}", None, 10, 3, 0.5, 0.75, 1.0, version, now_iso())


def notes(cid):
    return Notes(cid, None, [Topic("cats")], [], [Topic("dogs")])


def test_commit_writes_a_peft_folder_and_the_manifest(isolated_home):
    model = attach_lora(tiny_model()[0], TrainConfig())
    with UserMemory("alice") as memory:
        memory.commit(model, record("c1", 1), notes("c1"))
        memory.commit(model, record("c2", 2), notes("c2"))
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
        memory.commit(model, dataclasses.replace(record("c1", 2), learning_rate=1e-3), notes("c1"))
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
        memory.commit(model, record("c1", 1), notes("c1"))
        model.save_pretrained(memory.root / "versions" / "2")  # a crash after writing, before the commit
        memory.repair()
    assert memory.current_adapter().name == "1"
    assert memory.adapter_dir.resolve().name == "1"
    assert not (memory.root / "versions" / "2").exists()


@pytest.mark.parametrize("name", ["alice\n", "../x", "/etc", "a\x00b", "a/b", ".hidden", "", "x" * 129, "a b"])
def test_user_names_that_could_leave_the_store_or_hide_are_refused(name):
    with pytest.raises(InputError, match="invalid user name"):
        UserMemory(name)


def test_names_differing_only_in_case_are_refused(isolated_home):
    UserMemory("alice").lock().unlock()
    with pytest.raises(InputError, match="differs from the existing user 'alice' only in case"):
        UserMemory("Alice")
    UserMemory("alice")  # the same name is fine


def test_a_damaged_manifest_is_one_line_and_left_as_it_is(isolated_home):
    root = isolated_home / "users" / "dora"
    root.mkdir(parents=True)
    (root / "manifest.sqlite").write_bytes(b"this is not a database" * 100)
    before = (root / "manifest.sqlite").read_bytes()
    for read in (lambda m: m.learned(), lambda m: m.settings(), lambda m: m.notes()):
        with pytest.raises(InputError) as error:
            read(UserMemory("dora"))
        assert str(error.value).startswith(f"{root / 'manifest.sqlite'}: cannot be read")
        assert "paramem changed nothing" in str(error.value) and "\n" not in str(error.value)
    assert (root / "manifest.sqlite").read_bytes() == before


def test_the_adapter_is_flushed_to_disk_before_the_manifest_names_it(isolated_home, monkeypatch):
    from paramem.store import user as store

    seen = []
    real = store.fsync_tree

    def recording(folder):
        seen.append([c.id for c in UserMemory("erin").learned()])  # what the manifest holds at that moment
        real(folder)

    monkeypatch.setattr(store, "fsync_tree", recording)
    model = attach_lora(tiny_model()[0], TrainConfig())
    with UserMemory("erin") as memory:
        memory.commit(model, record("c1", 1), notes("c1"))
    assert seen == [[]] and [c.id for c in memory.learned()] == ["c1"]


def test_a_version_being_read_is_kept_until_its_reader_is_done(isolated_home):
    model = attach_lora(tiny_model()[0], TrainConfig())
    with UserMemory("fay") as writer:
        writer.commit(model, record("c1", 1), notes("c1"))
        with UserMemory("fay").reading() as folder:
            assert folder.name == "1"
            writer.commit(model, record("c2", 2), notes("c2"))
            assert (folder / "adapter_model.safetensors").exists()  # still there under its reader
        writer.commit(model, record("c3", 3), notes("c3"))
    assert sorted(p.name for p in (writer.root / "versions").iterdir()) == ["3"]


def test_notes_changed_after_learning_are_written_back(isolated_home):
    model = attach_lora(tiny_model()[0], TrainConfig())
    with UserMemory("gus") as memory:
        memory.commit(model, record("c1", 1), notes("c1"))
        changed = notes("c1")
        changed.negatives = []
        memory.update_notes([changed])
    assert memory.notes()[0].negatives == []
