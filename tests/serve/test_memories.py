"""The LRU of loaded memories: identities that never repeat, and a version replaced while it is read."""

import pytest
from serve_helpers import PLAIN

from paramem.augment.teachers.extractive import ExtractiveTeacher
from paramem.lifecycle.forget import forget
from paramem.lifecycle.remember import remember
from paramem.model.loading import tiny_model
from paramem.serve.errors import ApiError
from paramem.serve.memories import Memories
from paramem.store.user import UserMemory, VersionGone


@pytest.fixture
def memories(isolated_home):
    model, tokenizer = tiny_model()
    return Memories(model, tokenizer, None, "tiny", cache_size=2)


def test_versions_never_repeat_after_forgetting_everything_or_deleting_the_user(memories, demo_conversations):
    remember("alice", demo_conversations[:1], ExtractiveTeacher(), PLAIN)
    first = memories.acquire(("plum", "alice")).identity
    forget("alice", demo_conversations[0].id)
    assert UserMemory("alice").next_version() == 3  # 1 learned, 2 the empty memory: 1 is never given again
    remember("alice", demo_conversations[1:2], ExtractiveTeacher(), PLAIN)
    second = memories.acquire(("plum", "alice")).identity
    with UserMemory("alice") as memory:
        memory.delete()
    remember("alice", demo_conversations[1:2], ExtractiveTeacher(), PLAIN)  # version 1 of a new store
    third = memories.acquire(("plum", "alice")).identity
    assert len({first, second, third}) == 3 and memories.loads == 3


def test_a_milp_memory_dropped_and_stored_again_is_a_new_memory(memories, demo_conversations):
    from paramem.config import MiLPTrainConfig, MultiLoraConfig
    from paramem.memory.milp.model import learn

    model, tokenizer = tiny_model()
    learned = learn(
        model,
        tokenizer,
        demo_conversations[:1],
        MultiLoraConfig(loras=1, rank=2),
        MiLPTrainConfig(memory_epochs=1, instruction_epochs=1),
    )
    record = {"base_model": "tiny", "dtype": "float32", "memory": {}, "described": "n=1", "conversations": []}
    with UserMemory("alice") as memory:
        memory.milp.commit(learned.save_pretrained, record)
    first = memories.acquire(("milp", "alice")).identity
    with UserMemory("alice") as memory:
        memory.milp.drop()
        memory.milp.commit(learned.save_pretrained, record)  # version 1 again, as before
    assert memories.acquire(("milp", "alice")).identity != first


def test_a_version_replaced_while_it_is_read_is_read_again(memories, demo_conversations, monkeypatch):
    remember("alice", demo_conversations[:1], ExtractiveTeacher(), PLAIN)
    reading, calls = UserMemory.reading, []

    def replaced_once(self, version=None):
        calls.append(version)
        if len(calls) == 1:
            raise VersionGone("replaced")
        return reading(self, version)

    monkeypatch.setattr(UserMemory, "reading", replaced_once)
    assert memories.acquire(("plum", "alice")).form == "sequential" and len(calls) == 2


def test_a_memory_on_another_base_model_or_none_at_all_is_a_clear_error(memories, demo_conversations):
    with pytest.raises(ApiError) as none:
        memories.acquire(("plum", "nobody"))
    assert none.value.status == 404
    remember("alice", demo_conversations[:1], ExtractiveTeacher(), PLAIN)
    memories.base_model = "qwen2.5-0.5b"
    with pytest.raises(ApiError) as other:
        memories.acquire(("plum", "alice"))
    assert other.value.status == 409
