import json
import re
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from paramem.augment.teachers import make_teacher
from paramem.augment.teachers.base import drop_contradicting_negatives
from paramem.augment.teachers.endpoint import OpenAITeacher, TeacherError
from paramem.augment.teachers.extractive import ExtractiveTeacher
from paramem.augment.teachers.local import LocalTeacher, model_notes
from paramem.augment.teaching import NotesCache, augment
from paramem.data.notes import Notes, Topic, content_words, is_absent
from paramem.errors import InputError


def test_extractive_is_deterministic_and_negatives_are_absent(demo_conversations):
    teacher = ExtractiveTeacher()
    first = teacher.notes(demo_conversations[0])
    assert first == teacher.notes(demo_conversations[0])
    words = content_words(demo_conversations[0].text)
    assert first.topics and first.facts and len(first.negatives) >= len(first.topics)
    assert all(is_absent(n.name, words) for n in first.negatives)
    # Facts are the user's own sentences, turned into the third person
    user_words = content_words(" ".join(m.content for m in demo_conversations[0].messages if m.role == "user"))
    assert all(content_words(f.statement) - {"user"} <= user_words for f in first.facts)
    assert not any(re.search(r"\b(I|I'm|my|me)\b", f.statement) for f in first.facts)
    assert any(f.statement.startswith("The user") for f in first.facts)


def test_extractive_false_facts_balance_the_fact_questions(demo_conversations):
    """Fact-shaped questions are trained with "no" answers too, each about something never said."""
    from paramem.augment.pairs import PairConfig, training_pairs

    notes = ExtractiveTeacher().notes(demo_conversations[0])
    words = content_words(demo_conversations[0].text)
    assert len(notes.false_facts) == len(notes.facts)
    assert all(is_absent(f.statement, words) for f in notes.false_facts)
    false_statements = {w for f in notes.false_facts for w in f.wordings}
    pairs = training_pairs(notes, 1, PairConfig())
    asked_false = [
        p
        for p in pairs
        if p.label == "no" and any(s.rstrip(".").lower() in p.question.lower() for s in false_statements)
    ]
    assert asked_false


def scripted_teacher(messages):
    """Stands in for a model's replies, to test how replies are cleaned (the model itself runs in the slow test)."""
    instruction = messages[-1]["content"]
    if instruction.startswith("List the topics"):
        return "- tomato seedlings\n- tomato seedlings\n- a trip to Kyoto\n- drainage holes"
    if instruction.startswith("Give 3 other ways"):
        return "- young tomato plants\n- cherry blossoms in Kyoto\n- tomato sprouts"
    if instruction.startswith("Name 3 topics"):
        return "- terracotta pots\n- growing peppers\n- potato plants"
    return "- The user has yellow tomato seedlings on the balcony.\n- The user is flying to Kyoto in April."


def test_model_notes_are_cleaned_grounded_and_checked(demo_conversations):
    garden = demo_conversations[0]
    notes = model_notes(scripted_teacher, garden)
    names = [t.name for t in notes.topics]
    assert names == ["tomato seedlings", "drainage holes"]  # repeats and the copied example dropped
    assert notes.topics[0].paraphrases == ["young tomato plants", "tomato sprouts"]  # Kyoto leaked from the example
    words = content_words(garden.text)
    assert all(is_absent(w, words) for n in notes.negatives for w in n.wordings)  # "terracotta pots" was discussed
    assert notes.negatives[0].name == "growing peppers"
    assert notes.facts[0].statement == "The user has yellow tomato seedlings on the balcony"
    assert notes.facts[0].paraphrases == ["You have yellow tomato seedlings on the balcony"]
    assert len(notes.facts) == 3  # topped up with the user's own sentences
    assert not any("Kyoto" in f.statement for f in notes.facts)


class FlakyChatServer(BaseHTTPRequestHandler):
    calls = 0

    def do_POST(self):
        FlakyChatServer.calls += 1
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        assert body["messages"][0]["role"] == "system"
        if FlakyChatServer.calls == 1:  # the first call fails: the teacher must retry
            self.send_response(503)
            self.end_headers()
            return
        reply = {"choices": [{"message": {"content": scripted_teacher(body["messages"])}}]}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_openai_teacher_retries_and_caches(tmp_path, demo_conversations):
    server = HTTPServer(("127.0.0.1", 0), FlakyChatServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        teacher = OpenAITeacher(f"http://127.0.0.1:{server.server_port}/v1", retries=2, concurrency=2)
        cache = NotesCache(tmp_path / "cache")
        notes = augment(demo_conversations[:2], teacher, cache)
        assert [t.name for t in notes[0].topics] == ["tomato seedlings", "drainage holes"]
        assert notes[0].negatives[0].name == "growing peppers"
        calls = FlakyChatServer.calls
        again = augment(demo_conversations[:2], teacher, cache)  # from the cache: no new calls
        assert FlakyChatServer.calls == calls and again == notes
    finally:
        server.shutdown()


class ScriptedServer(BaseHTTPRequestHandler):
    """Answers each request with the next (status, headers) of `script`, then with chat replies;
    records the Authorization header it was sent."""

    script: list[tuple[int, dict]] = []
    seen_auth: list[str | None] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        ScriptedServer.seen_auth.append(self.headers.get("Authorization"))
        status, headers = ScriptedServer.script.pop(0) if ScriptedServer.script else (200, {})
        data = (
            json.dumps({"choices": [{"message": {"content": scripted_teacher(body["messages"])}}]})
            if status == 200
            else '{"error": {"message": "invalid model name"}}'
        ).encode()
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def scripted_endpoint(monkeypatch):
    server = HTTPServer(("127.0.0.1", 0), ScriptedServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ScriptedServer.script, ScriptedServer.seen_auth = [], []
    sleeps: list[float] = []
    monkeypatch.setattr("paramem.augment.teachers.endpoint.time.sleep", sleeps.append)
    yield f"http://127.0.0.1:{server.server_port}/v1", sleeps
    server.shutdown()


def test_openai_teacher_a_request_error_is_one_line_at_once(scripted_endpoint):
    url, sleeps = scripted_endpoint
    ScriptedServer.script = [(400, {})]
    with pytest.raises(TeacherError, match=r"answered HTTP 400: \{\"error\": \{\"message\": \"invalid model name"):
        OpenAITeacher(url, retries=3).complete([{"role": "user", "content": "hi"}])
    assert len(ScriptedServer.seen_auth) == 1 and sleeps == []  # not retried


def test_openai_teacher_gives_up_with_one_line_and_never_sleeps_after_its_last_try(scripted_endpoint):
    url, sleeps = scripted_endpoint
    ScriptedServer.script = [(503, {})] * 3
    with pytest.raises(TeacherError, match="failed 3 times, last with HTTP 503"):
        OpenAITeacher(url, retries=2, backoff_s=1.0).complete([{"role": "user", "content": "hi"}])
    assert sleeps == [1.0, 2.0]


def test_openai_teacher_waits_as_long_as_retry_after_says(scripted_endpoint):
    url, sleeps = scripted_endpoint
    ScriptedServer.script = [(429, {"Retry-After": "7"}), (503, {"Retry-After": "500"})]
    assert OpenAITeacher(url, retries=2).complete(
        [{"role": "system", "content": "x"}, {"role": "user", "content": "y"}]
    )
    assert sleeps == [7.0, 60.0]  # capped at a minute


def test_openai_teacher_reads_its_key_from_the_environment(scripted_endpoint, monkeypatch):
    url, _ = scripted_endpoint
    OpenAITeacher(url).complete([{"role": "user", "content": "hi"}])
    monkeypatch.setenv("MY_TEACHER_KEY", "sk-test")
    make_teacher("openai", url=url, api_key_env="MY_TEACHER_KEY").complete([{"role": "user", "content": "hi"}])
    assert ScriptedServer.seen_auth == [None, "Bearer sk-test"]


def test_notes_are_cached_as_soon_as_each_conversation_has_them(tmp_path, demo_conversations):
    class FailsOnTheThird(ExtractiveTeacher):
        def notes(self, conversation):
            if conversation.id == demo_conversations[2].id:
                raise KeyboardInterrupt
            return super().notes(conversation)

    cache = NotesCache(tmp_path / "cache")
    with pytest.raises(KeyboardInterrupt):
        augment(demo_conversations[:4], FailsOnTheThird(), cache)
    kept = [c.id for c in demo_conversations[:4] if cache.get(FailsOnTheThird(), c) is not None]
    assert kept == [c.id for c in demo_conversations[:2]]


def test_a_concurrent_teacher_caches_what_finished_before_raising_the_first_error(
    scripted_endpoint, tmp_path, demo_conversations
):
    url, _ = scripted_endpoint
    teacher = OpenAITeacher(url, retries=0, concurrency=1)
    teacher.notes(demo_conversations[0])
    calls, ScriptedServer.seen_auth = len(ScriptedServer.seen_auth), []
    ScriptedServer.script = [(200, {})] * calls + [(401, {})] * 100  # the first conversation's calls succeed
    cache = NotesCache(tmp_path / "cache")
    with pytest.raises(TeacherError, match=r"HTTP 401 \(is OPENAI_API_KEY set\?\)"):
        augment(demo_conversations[:3], teacher, cache)
    assert cache.get(teacher, demo_conversations[0]) is not None


@pytest.mark.slow
def test_local_teacher_runs_a_real_model(demo_conversations):
    cat = demo_conversations[3]
    notes = LocalTeacher("smollm2-135m").notes(cat)
    words = content_words(cat.text)
    assert notes.topics and all(content_words(t.name) & words for t in notes.topics)
    assert len(notes.negatives) >= len(notes.topics)
    assert all(is_absent(w, words) for n in notes.negatives for w in n.wordings)
    assert notes.date == "14 March 2026"


def test_negatives_that_another_conversation_discussed_are_dropped(demo_conversations):
    garden, cat = demo_conversations[0], demo_conversations[3]
    garden_notes = Notes(
        garden.id,
        None,
        [Topic("tomato seedlings")],
        [],
        [Topic("a rescue cat", ["adopting a kitten"]), Topic("mowing the lawn")],
    )
    cat_notes = Notes(cat.id, None, [Topic("a kitten adoption")], [], [])
    kept = drop_contradicting_negatives([garden_notes, cat_notes], [garden.text, cat.text])
    # "a rescue cat" is in the cat conversation; "adopting a kitten" resembles its topic.
    assert [n.wordings for n in kept[0].negatives] == [["mowing the lawn"]]


def test_notes_cache_entries_of_a_conversation_can_be_removed(tmp_path, demo_conversations):
    cache = NotesCache(tmp_path / "cache")
    garden, other = demo_conversations[0], demo_conversations[1]
    augment([garden, other], ExtractiveTeacher(), cache)
    assert cache.remove(garden.content_hash) == 1
    assert cache.get(ExtractiveTeacher(), garden) is None and cache.get(ExtractiveTeacher(), other) is not None
    assert not any(garden.content_hash in p.name for p in (tmp_path / "cache").rglob("*"))


def test_a_damaged_notes_cache_entry_is_one_line_and_left_alone(tmp_path, demo_conversations):
    cache = NotesCache(tmp_path / "cache")
    augment(demo_conversations[:1], ExtractiveTeacher(), cache)
    [entry] = (tmp_path / "cache").rglob("*.json")
    entry.write_text("{broken")
    with pytest.raises(InputError, match=r"cannot be read .*delete it \(or run with --regenerate-notes\)"):
        augment(demo_conversations[:1], ExtractiveTeacher(), cache)
    assert entry.read_text() == "{broken"
