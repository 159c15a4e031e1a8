"""remember-many on a real local Ray: three users on the tiny model, one bad file."""

import json

import pytest
from conftest import DEMO
from peft import PeftConfig
from typer.testing import CliRunner

from paramem.cli.main import app
from paramem.errors import InputError
from paramem.lifecycle.distributed import read_jobs
from paramem.store.user import UserMemory


def test_remember_many_trains_each_user_separately_and_survives_a_bad_file(tmp_path, isolated_home):
    lines = (DEMO / "conversations.jsonl").read_text(encoding="utf-8").splitlines()
    users = {"alice": lines[0:2], "bob": lines[2:3], "carol": lines[3:5]}
    folder = tmp_path / "users"
    folder.mkdir()
    for user, records in users.items():
        (folder / f"{user}.jsonl").write_text("\n".join(records) + "\n", encoding="utf-8")
    (folder / "dave.jsonl").write_text('{"id": "x", "messages": []}\n', encoding="utf-8")

    result = CliRunner().invoke(app, ["remember-many", str(folder), "--base-model", "tiny", "--epochs", "1"])

    assert result.exit_code == 2, result.output
    assert "dave" in result.stderr and "dave.jsonl:1:" in result.stderr
    adapters = set()
    for user, records in users.items():
        memory = UserMemory(user, isolated_home)
        assert [c.id for c in memory.learned()] == [json.loads(r)["id"] for r in records]
        adapter = memory.current_adapter()
        assert PeftConfig.from_pretrained(str(adapter)).peft_type == "LORA"
        adapters.add(adapter.resolve())
    assert len(adapters) == 3  # one adapter per user, none shared
    assert not UserMemory("dave", isolated_home).exists


def test_manifest_paths_are_relative_to_it_and_users_are_unique(tmp_path):
    manifest = tmp_path / "users.jsonl"
    manifest.write_text('{"user": "a", "file": "a.jsonl"}\n{"user": "b", "file": "sub/b.json", "format": "sharegpt"}\n')
    jobs = read_jobs(manifest)
    assert [(j.user, j.file, j.format) for j in jobs] == [
        ("a", tmp_path / "a.jsonl", None),
        ("b", tmp_path / "sub" / "b.json", "sharegpt"),
    ]
    manifest.write_text('{"user": "a", "file": "a.jsonl"}\n{"user": "a", "file": "b.jsonl"}\n')
    with pytest.raises(InputError, match=r"users.jsonl:2: user 'a' appears twice"):
        read_jobs(manifest)
