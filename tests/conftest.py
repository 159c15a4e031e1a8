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
    from paramem.conversations import load_conversations

    return load_conversations(DEMO / "conversations.jsonl")


def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def sentences_left(conversation, *folders) -> list[str]:
    """Files under the folders that still hold a sentence (8 words or more) of the conversation."""
    import re

    sentences = [s for m in conversation.messages for s in re.split(r"(?<=[.!?])\s+", m.content) if len(s.split()) >= 8]
    found = []
    for folder in folders:
        for path in folder.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                found += [f"{path}: {s}" for s in sentences if s.encode() in data]
    return found
