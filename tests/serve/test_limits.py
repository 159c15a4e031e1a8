"""Hostile or careless clients: bodies too big, chats too long, bad bytes, odd ids, damaged files; every
answer a JSON error with no file path, process id or traceback (issue 36, defects 6-10)."""

import json
import shutil
import time

import httpx
from serve_helpers import QUESTION, upload_line, wait_for

from paramem.store.user import UserMemory


def client(url, token):
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60)


def test_bodies_and_chats_over_their_limits_are_refused(served):
    server, url, tokens = served
    alice = client(url, tokens["alice"])
    server.config.max_upload_bytes = 1000

    def chunks():  # no Content-Length: the server must stop reading at the limit, not after the body
        for _ in range(100):
            yield b"x" * 100

    assert alice.post("/memory/conversations", content=chunks()).status_code == 413
    server.config.max_request_bytes = 2000
    long = {"model": "tiny", "messages": [{"role": "user", "content": "word " * 1000}]}
    assert alice.post("/chat/completions", json=long).status_code == 413
    server.config.max_request_bytes = 1_000_000
    server.config.max_prompt_tokens = 100
    refused = alice.post("/chat/completions", json=long)
    assert refused.status_code == 400 and "limit is 100" in refused.json()["error"]["message"]


def test_an_upload_that_is_not_utf8_is_refused_not_replaced(served):
    _, url, tokens = served
    bad = b'{"id": "x", "messages": [{"role": "user", "content": "caf\xe9"}]}\n'
    refused = client(url, tokens["bob"]).post("/memory/conversations", content=bad)
    assert refused.status_code == 400 and "not UTF-8" in refused.json()["error"]["message"]
    assert not (UserMemory("bob").root / "jobs").exists() or not list((UserMemory("bob").root / "jobs").iterdir())


def test_two_uploads_of_one_user_wait_in_line_and_both_are_learned(served, demo_conversations):
    _, url, tokens = served
    bob = client(url, tokens["bob"])
    first = bob.post("/memory/conversations", content=upload_line(demo_conversations[3])).json()
    second = bob.post("/memory/conversations", content=upload_line(demo_conversations[4])).json()
    assert second["state"] == "queued"  # not UserLocked: it waits for the first
    assert wait_for(bob, "", first["job"])["state"] == "done"
    assert wait_for(bob, "", second["job"])["state"] == "done"
    ids = [r.id for r in UserMemory("bob").learned()]
    assert ids == [demo_conversations[1].id, demo_conversations[3].id, demo_conversations[4].id]


def test_too_many_jobs_are_refused_and_old_records_are_cleaned_up(served, demo_conversations):
    server, url, tokens = served
    bob = client(url, tokens["bob"])
    server.config.max_jobs = 1
    first = bob.post("/memory/conversations", content=upload_line(demo_conversations[3]))
    refused = bob.post("/memory/conversations", content=upload_line(demo_conversations[4]))
    assert refused.status_code == 429 and refused.headers["Retry-After"]
    assert UserMemory("bob").texts.ids() == {demo_conversations[3].id}  # the refused upload indexed nothing
    wait_for(bob, "", first.json()["job"])
    while server.jobs.busy:  # the worker sees its child end a moment after the child records it
        time.sleep(0.05)
    server.config.job_history = 1
    second = bob.post("/memory/conversations", content=upload_line(demo_conversations[4])).json()
    wait_for(bob, "", second["job"])
    records = list((UserMemory("bob").root / "jobs").glob("*.json"))
    assert [r.stem for r in records] == [second["job"]]  # the older ended record is gone
    assert bob.get(f"/memory/jobs/{first.json()['job']}").status_code == 404


def test_a_conversation_whose_id_holds_a_slash_is_forgotten_over_http(served, demo_conversations):
    _, url, tokens = served
    bob = client(url, tokens["bob"])
    line = json.loads(upload_line(demo_conversations[3]))
    line["id"] = "conv-26/session_1"
    job = bob.post("/memory/conversations", content=(json.dumps(line) + "\n").encode()).json()
    assert wait_for(bob, "", job["job"])["state"] == "done"
    gone = bob.delete("/memory/conversations/conv-26/session_1")
    assert gone.status_code == 202, gone.text
    assert wait_for(bob, "", gone.json()["job"])["state"] == "done"
    assert "conv-26/session_1" not in [r.id for r in UserMemory("bob").learned()]


def test_while_a_forget_is_pending_the_memory_is_not_answered_from(served, demo_conversations):
    _, url, tokens = served
    alice = client(url, tokens["alice"])
    chat = {"model": "paramem:alice", "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 4}
    job = alice.delete(f"/memory/conversations/{demo_conversations[0].id}").json()  # its process takes seconds
    held = alice.post("/chat/completions", json=chat)
    assert held.status_code == 409 and job["job"] in held.json()["error"]["message"]
    assert alice.get("/memory").json()["forgetting"] == job["job"]
    assert wait_for(alice, "", job["job"])["state"] == "done"
    assert alice.post("/chat/completions", json=chat).status_code == 404  # nothing left to answer from


def test_damaged_files_and_stray_folders_give_json_errors_without_paths(served, isolated_home):
    _, url, tokens = served
    stray = isolated_home / "users" / "-not a user"
    stray.mkdir(parents=True)
    (stray / "manifest.sqlite").write_bytes(b"")
    assert client(url, tokens["alice"]).get("/models").status_code == 200  # a stray folder breaks no one
    (UserMemory("bob").root / "manifest.sqlite").write_bytes(b"this is not a database" * 100)
    bob = client(url, tokens["bob"])
    for response in (
        bob.get("/memory"),
        bob.post("/chat/completions", json={"model": "paramem:bob", "messages": [{"role": "user", "content": "hi"}]}),
    ):
        assert response.status_code == 500 and response.json()["error"]["message"]
        assert str(isolated_home) not in response.text and "Traceback" not in response.text


def test_every_response_forbids_framing_and_foreign_scripts(served):
    _, url, tokens = served
    root = url.removesuffix("/v1")
    for path in ("/", "/page.js", "/v1/models"):
        response = httpx.get(root + path, headers={"Authorization": f"Bearer {tokens['alice']}"})
        assert response.headers["X-Frame-Options"] == "DENY"
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    assert "<script>" not in httpx.get(root + "/").text  # no inline script for the policy to allow


def test_a_dead_job_says_so_without_its_process_or_its_last_words(served, demo_conversations, isolated_home):
    import os
    import signal

    server, url, tokens = served
    bob = client(url, tokens["bob"])
    job = bob.post("/memory/conversations", content=upload_line(demo_conversations[6])).json()["job"]
    while job not in server.jobs.children:
        time.sleep(0.05)
    child = server.jobs.children[job].pid
    end = time.time() + 30
    while os.getpriority(os.PRIO_PROCESS, child) < os.getpriority(os.PRIO_PROCESS, 0) + 10 and time.time() < end:
        time.sleep(0.1)
    assert os.getpriority(os.PRIO_PROCESS, child) == os.getpriority(os.PRIO_PROCESS, 0) + 10  # replies first
    os.kill(child, signal.SIGKILL)
    failed = wait_for(bob, "", job)
    assert failed["state"] == "failed" and "pid" not in failed and str(isolated_home) not in json.dumps(failed)
    shutil.rmtree(UserMemory("bob").root / "jobs")
