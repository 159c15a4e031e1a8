import json
import os
from pathlib import Path

import pytest

# The shared datasets live beside the project (DESIGN.md): ../shared/data from the project root.
DATA = Path(os.environ.get("PARAMEM_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))
DEMO = Path(__file__).resolve().parents[1] / "src" / "paramem" / "demo_data"
# Small files in each dataset's own shape and layout (as ../shared/data; invented content): every mechanism
# is tested from a plain clone. The tests that read the full datasets skip, saying why, without them.
FIXTURES = Path(__file__).resolve().parent / "fixtures"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"the shared datasets are not at {DATA} (set PARAMEM_DATA)")


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    """Every test gets its own memory home and teacher cache; the model cache stays shared."""
    monkeypatch.setenv("PARAMEM_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture
def demo_conversations():
    from paramem.data.formats import load_conversations

    return load_conversations(DEMO / "conversations.jsonl")


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def files_holding(phrases, *folders) -> list[str]:
    """Files under the folders that hold one of the phrases, as "path: phrase"."""
    found = []
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                found += [f"{path}: {p}" for p in phrases if p.encode() in data]
    return found


def sentences_left(conversation, *folders) -> list[str]:
    """Files under the folders that still hold a sentence (8 words or more) of the conversation."""
    import re

    sentences = [s for m in conversation.messages for s in re.split(r"(?<=[.!?])\s+", m.content) if len(s.split()) >= 8]
    return files_holding(sentences, *folders)


@pytest.fixture
def served(demo_conversations, isolated_home):
    """A server of three users (two sequential memories, one of cartridges) on the tiny model, served by
    uvicorn on 127.0.0.1 in a thread (tests/serve): (server, API url, each user's token)."""
    from serve_helpers import PLAIN, start

    from paramem.augment.teachers.extractive import ExtractiveTeacher
    from paramem.config import RememberConfig, TrainConfig
    from paramem.lifecycle.remember import remember
    from paramem.serve.config import ServeConfig
    from paramem.serve.server import MemoryServer
    from paramem.store.user import UserMemory

    remember("alice", demo_conversations[:1], ExtractiveTeacher(), PLAIN)
    remember("bob", demo_conversations[1:2], ExtractiveTeacher(), PLAIN)
    cartridge = TrainConfig(
        objective="distill", distill_checks=0, form="cartridge", epochs=1, distill_queries=2, distill_answer_tokens=3
    )
    carol = RememberConfig(base_model="tiny", keep_text="never", train=cartridge)
    remember("carol", demo_conversations[2:3], ExtractiveTeacher(), carol)
    tokens = {}
    for name in ("alice", "bob", "carol"):
        with UserMemory(name) as memory:
            tokens[name] = memory.tokens.new()
    server = MemoryServer(ServeConfig("tiny", isolated_home, cache_size=2, max_new_tokens=16))
    uv, thread, url = start(server)
    yield server, url, tokens
    uv.should_exit = True
    thread.join(10)


QUESTION = "What do you remember about my garden?"
