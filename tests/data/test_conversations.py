import json

import pytest
from conftest import DATA, DEMO, FIXTURES, needs_data, write_jsonl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from paramem.data.formats import detect_format, load_conversations
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
    conversations = load_conversations(FIXTURES / "locomo" / "locomo8.json")
    assert detect_format(FIXTURES / "locomo" / "locomo8.json") == "locomo"
    first = [c for c in conversations if c.id.startswith("mini-0/")]
    assert [c.id for c in first] == [f"mini-0/session_{n}" for n in (1, 2, 3)]
    assert [c.timestamp for c in first] == sorted(c.timestamp for c in first)
    assert first[0].messages[0].name == "Nora" and first[0].messages[1].role == "assistant"


@needs_data
def test_the_real_locomo_file_loads_in_date_order():
    conversations = load_conversations(DATA / "locomo" / "locomo8.json")
    first = [c for c in conversations if c.id.startswith("conv-26/")]
    assert first[0].id == "conv-26/session_1"
    assert len(first) == 19
    stamps = [c.timestamp for c in first]
    assert stamps == sorted(stamps)
    assert first[0].messages[0].name == "Caroline"


def test_msc_and_malp_load():
    msc = load_conversations(FIXTURES / "msc.txt")
    assert [c.id for c in msc] == [f"mini-episode/session_{n}" for n in (1, 2, 3)]
    assert msc[0].messages[0].content == "I just got my first beehive." and msc[0].messages[0].role == "user"
    malp = load_conversations(FIXTURES / "malp.json")
    assert [m.content for m in malp[0].messages[:2]] == [
        "I have had a dry cough for two weeks.",
        "Do you smoke or have a fever?",
    ]


@needs_data
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


def test_unicode_line_separators_inside_messages_load_and_round_trip(tmp_path):
    text = "first\u2028second\u0085third\u2029fourth\x1cfifth"
    path = tmp_path / "c.jsonl"
    # ensure_ascii=False writes the separators raw, as many tools do
    path.write_text(json.dumps(conv("a", text), ensure_ascii=False) + "\n", encoding="utf-8")
    [loaded] = load_conversations(path)
    assert loaded.messages[0].content == text
    again = write_jsonl(tmp_path / "again.jsonl", [{"id": loaded.id, "messages": [{"role": "user", "content": text}]}])
    assert load_conversations(again)[0].content_hash == loaded.content_hash


def test_invalid_utf8_names_its_line(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_bytes(json.dumps(conv("a", "fine")).encode() + b"\n" + b'{"id": "b", "messages": [\xff]}\n')
    with pytest.raises(InputError, match=r"c\.jsonl:2: not UTF-8"):
        load_conversations(path, "jsonl")


@pytest.mark.parametrize(
    "fmt, document, expected",
    [
        (
            "locomo",
            [{"conversation": {"speaker_a": "A", "session_1": [{"speaker": "A", "text": "hi"}]}}, {"qa": []}],
            "sample 1: missing 'conversation'",
        ),
        (
            "malp",
            [[{"0": {"User": "hi", "Assistant": "hello"}}], ["not a round"]],
            "dialogue 1: each round must be an object",
        ),
        (
            "chatgpt",
            [
                {"mapping": {"r": {"message": {"author": {"role": "user"}, "content": {"parts": ["hi"]}}}}},
                {"title": "x"},
            ],
            "conversation 1: missing 'mapping'",
        ),
        (
            "sharegpt",
            [{"conversations": [{"from": "human", "value": "hi"}]}, {"conversations": [{"from": "x"}]}],
            "item 1: each turn needs 'from' and 'value'",
        ),
    ],
)
def test_json_document_errors_name_the_line_of_the_item(tmp_path, fmt, document, expected):
    path = tmp_path / "doc.json"
    text = json.dumps(document, indent=1)
    path.write_text(text)
    second_item = [n for n, line in enumerate(text.split("\n"), start=1) if line in (" {", " [")][1]
    with pytest.raises(InputError) as error:
        load_conversations(path, fmt)
    assert str(error.value) == f"{path}:{second_item}: {expected}"


def test_a_broken_json_document_names_the_line_of_the_fault(tmp_path):
    path = tmp_path / "doc.json"
    path.write_text('[\n {"conversation": {}},\n {"conversation": \n')
    with pytest.raises(InputError, match=r"doc\.json:4: invalid JSON"):
        load_conversations(path, "locomo")


def test_limits_on_file_size_conversation_count_and_length(tmp_path, monkeypatch):
    from paramem.data import conversations

    path = write_jsonl(tmp_path / "c.jsonl", [conv("a", "x" * 40), conv("b", "short")])
    monkeypatch.setattr(conversations, "MAX_CONVERSATION_CHARS", 30)
    with pytest.raises(InputError, match=r"c\.jsonl:1: conversation 'a' has 40 characters; at most 30"):
        load_conversations(path)
    monkeypatch.setattr(conversations, "MAX_CONVERSATIONS", 1)
    monkeypatch.setattr(conversations, "MAX_CONVERSATION_CHARS", 1000)
    with pytest.raises(InputError, match="2 conversations; at most 1 per file"):
        load_conversations(path)
    monkeypatch.setattr(conversations, "MAX_FILE_BYTES", 10)
    with pytest.raises(InputError, match="paramem reads at most"):
        load_conversations(path)


def test_format_detection_reads_only_the_start_of_a_file(tmp_path, monkeypatch):

    path = write_jsonl(tmp_path / "c.jsonl", [conv(str(i), "hello " * 50) for i in range(200)])
    real_open, read = open, []

    def counting_open(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        original = handle.read
        handle.read = lambda size=-1: read.append(size) or original(size)
        return handle

    monkeypatch.setattr("builtins.open", counting_open)
    assert detect_format(path) == "jsonl"
    assert read and all(0 < size <= 1 << 20 for size in read)
