import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

from paramem.augment.notes import content_words, is_absent
from paramem.augment.teachers import (FEW_SHOT_NOTES, ExtractiveTeacher, NotesCache, OpenAITeacher, augment,
                                      parse_notes)


def test_extractive_is_deterministic_and_negatives_are_absent(demo_conversations):
    teacher = ExtractiveTeacher()
    first = teacher.notes(demo_conversations[0], demo_conversations[1:])
    assert first == teacher.notes(demo_conversations[0], demo_conversations[1:])
    words = content_words(demo_conversations[0].text)
    assert first.topics and first.facts and len(first.negatives) >= len(first.topics)
    assert all(is_absent(n.name, words) for n in first.negatives)
    assert all("the user" in f.statement.lower() or f.statement for f in first.facts)


def test_parse_notes_drops_negatives_present_in_conversation(demo_conversations):
    garden = demo_conversations[0]
    text = FEW_SHOT_NOTES + "\nNOT: terracotta pots | clay pots\nTOPIC: tomato seedlings | young tomato plants"
    notes = parse_notes(text, garden, ExtractiveTeacher(), [])
    assert "terracotta pots" not in [n.name for n in notes.negatives]
    assert any(t.name == "tomato seedlings" and t.paraphrases == ["young tomato plants"] for t in notes.topics)


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
        reply = {"choices": [{"message": {"content": "TOPIC: tomato plants | seedlings\nNOT: a trip to Mars | space"}}]}
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
        assert [n.topics[0].name for n in notes] == ["tomato plants", "tomato plants"]
        assert notes[0].negatives[0].name == "a trip to Mars"
        calls = FlakyChatServer.calls
        again = augment(demo_conversations[:2], teacher, cache)  # from the cache: no new calls
        assert FlakyChatServer.calls == calls and again == notes
    finally:
        server.shutdown()
