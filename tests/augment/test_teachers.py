import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from paramem.augment.notes import Notes, Topic, content_words, is_absent
from paramem.augment.teachers import (
    ExtractiveTeacher,
    LocalTeacher,
    NotesCache,
    OpenAITeacher,
    augment,
    drop_contradicting_negatives,
    model_notes,
)


def test_extractive_is_deterministic_and_negatives_are_absent(demo_conversations):
    teacher = ExtractiveTeacher()
    first = teacher.notes(demo_conversations[0])
    assert first == teacher.notes(demo_conversations[0])
    words = content_words(demo_conversations[0].text)
    assert first.topics and first.facts and len(first.negatives) >= len(first.topics)
    assert all(is_absent(n.name, words) for n in first.negatives)
    assert all("the user" in f.statement.lower() or f.statement for f in first.facts)


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
