import json

import pytest
from conftest import DATA, DEMO, write_jsonl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from paramem.conversations import detect_format, load_conversations
from paramem.errors import InputError


def conv(cid, *texts, timestamp=None):
    record = {
        "id": cid,
        "messages": [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(texts)],
    }
    if timestamp:
        record["timestamp"] = timestamp
    return record


def test_jsonl_loads_in_line_order(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [conv("b", "hi", "hello"), conv("a", "x")])
    conversations = load_conversations(path)
    assert [c.id for c in conversations] == ["b", "a"]
    assert conversations[0].messages[1].role == "assistant"


def test_jsonl_timestamps_set_learning_order(tmp_path):
    path = write_jsonl(
        tmp_path / "c.jsonl",
        [conv("late", "x", timestamp="2026-03-02T09:00:00Z"), conv("early", "y", timestamp="2026-01-01T09:00:00Z")],
    )
    assert [c.id for c in load_conversations(path)] == ["early", "late"]


@pytest.mark.parametrize(
    "lines, expected",
    [
        (['{"id": "a", "messages": [{"role": "user", "content": "hi"}]}', "{not json"], ":2: invalid JSON"),
        (['{"id": "a", "messages": [{"content": "hi"}]}'], ":1: message 0: missing 'role'"),
        (['{"id": "a", "messages": [{"role": "user"}]}'], ":1: message 0: missing 'content'"),
        (['{"id": "a", "messages": []}'], ":1: conversation 'a' is empty"),
        (['{"id": "a", "messages": [{"role": "user", "content": "  "}]}'], ":1: conversation 'a' is empty"),
        (['{"id": "a", "messages": [{"role": "bot", "content": "x"}]}'], ":1: message 0: role must be"),
        (['{"id": "a", "messages": [{"role": "user", "content": "x"}]}'] * 2, ":2: duplicate conversation id 'a'"),
        (['{"id": "a", "timestamp": "yesterday", "messages": [{"role": "user", "content": "x"}]}'], "not ISO 8601"),
    ],
)
def test_jsonl_errors_name_file_line_and_reason(tmp_path, lines, expected):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError) as error:
        load_conversations(path, "jsonl")
    assert str(error.value).startswith(str(path))
    assert expected in str(error.value)


def test_unknown_format_and_missing_file(tmp_path):
    path = tmp_path / "x.txt"
    path.write_text("hello world\n")
    with pytest.raises(InputError, match="unknown conversation format"):
        load_conversations(path)
    with pytest.raises(InputError, match="file not found"):
        load_conversations(tmp_path / "missing.jsonl")


def test_sharegpt(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(
        json.dumps(
            [{"id": "s1", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}]
        )
    )
    assert detect_format(path) == "sharegpt"
    [c] = load_conversations(path)
    assert (c.id, [m.role for m in c.messages]) == ("s1", ["user", "assistant"])


def test_chatgpt_export_follows_current_branch(tmp_path):
    mapping = {
        "root": {"message": None, "parent": None, "children": ["u1"]},
        "u1": {
            "message": {"author": {"role": "user"}, "content": {"parts": ["Plan my trip"]}},
            "parent": "root",
            "children": ["a_old", "a_new"],
        },
        "a_old": {
            "message": {"author": {"role": "assistant"}, "content": {"parts": ["old reply"]}},
            "parent": "u1",
            "children": [],
        },
        "a_new": {
            "message": {"author": {"role": "assistant"}, "content": {"parts": ["new reply"]}},
            "parent": "u1",
            "children": [],
        },
    }
    path = tmp_path / "conversations.json"
    path.write_text(
        json.dumps(
            [
                {
                    "title": "Trip",
                    "create_time": 1700000000.0,
                    "mapping": mapping,
                    "current_node": "a_new",
                    "conversation_id": "x1",
                }
            ]
        )
    )
    assert detect_format(path) == "chatgpt"
    [c] = load_conversations(path)
    assert [m.content for m in c.messages] == ["Plan my trip", "new reply"]


def test_locomo_sessions_in_date_order():
    conversations = load_conversations(DATA / "locomo" / "locomo8.json")
    first = [c for c in conversations if c.id.startswith("conv-26/")]
    assert first[0].id == "conv-26/session_1"
    assert len(first) == 19
    stamps = [c.timestamp for c in first]
    assert stamps == sorted(stamps)
    assert first[0].messages[0].name == "Caroline"


def test_msc_and_malp_load_real_files():
    msc = load_conversations(DATA / "msc" / "msc_dialogue" / "session_3" / "test.txt")
    assert len(msc) >= 501 * 3 - 5 and msc[0].id.endswith("/session_1")
    malp = load_conversations(DATA / "malp" / "dialogues2_cleaned.json")
    assert malp and all(m.content and not m.content.startswith('"') for m in malp[0].messages)


def test_demo_data_is_valid(demo_conversations):
    assert len(demo_conversations) == 8
    from paramem.evaluate.probes import load_probes

    probes = load_probes(DEMO / "probes.jsonl", {c.id for c in demo_conversations})
    assert len(probes) == 48 and sum(p.answer == "yes" for p in probes) == 24


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    text=st.one_of(
        st.text(max_size=300),
        st.lists(
            st.dictionaries(
                st.sampled_from(
                    ["id", "messages", "role", "content", "conversations", "mapping", "dialog", "timestamp"]
                ),
                st.recursive(
                    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                    lambda inner: (
                        st.lists(inner, max_size=3)
                        | st.dictionaries(
                            st.sampled_from(["role", "content", "from", "value", "text", "id"]), inner, max_size=3
                        )
                    ),
                    max_leaves=8,
                ),
                max_size=4,
            ),
            max_size=4,
        ).map(lambda records: "\n".join(json.dumps(r) for r in records)),
    ),
    fmt=st.sampled_from([None, "jsonl", "sharegpt", "chatgpt", "locomo", "msc", "malp"]),
)
def test_loaders_never_crash_on_mangled_input(tmp_path, text, fmt):
    path = tmp_path / "fuzz.jsonl"
    path.write_text(text, encoding="utf-8")
    try:
        conversations = load_conversations(path, fmt)
    except InputError as error:
        assert str(error).startswith(str(path))
        return
    assert conversations and all(c.messages for c in conversations)
