"""`paramem serve` with the official openai client, against a server the test starts on 127.0.0.1."""

import threading
import time

import pytest
from conftest import sentences_left
from openai import OpenAI, PermissionDeniedError
from serve_helpers import PLAIN, QUESTION, expected, left_job, wait_for

from paramem.augment.teachers.extractive import ExtractiveTeacher
from paramem.files import cache_home, paramem_home
from paramem.lifecycle.remember import remember
from paramem.model.generate import generate
from paramem.model.prompts import SYSTEM_PROMPT
from paramem.read.loading import load_memory
from paramem.store.user import UserMemory


def test_each_user_gets_their_own_memory_and_no_one_elses(served):
    server, url, tokens = served
    alice = OpenAI(base_url=url, api_key=tokens["alice"])
    assert [m.id for m in alice.models.list()] == ["tiny", "paramem:alice"]
    reply = alice.chat.completions.create(
        model="paramem:alice", messages=[{"role": "user", "content": QUESTION}], max_tokens=16
    )
    assert reply.choices[0].message.content == expected("alice")
    # usage counts the chat the model read (system prompt included); 16 tokens without an end: "length"
    read = server.tokenizer.apply_chat_template(
        [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": QUESTION}],
        add_generation_prompt=True,
        return_dict=True,
    )
    assert reply.usage.prompt_tokens == len(read["input_ids"])
    assert (reply.usage.completion_tokens, reply.choices[0].finish_reason) == (16, "length")
    with pytest.raises(PermissionDeniedError):
        alice.chat.completions.create(
            model="paramem:bob", messages=[{"role": "user", "content": QUESTION}], max_tokens=4
        )
    base = alice.chat.completions.create(model="tiny", messages=[{"role": "user", "content": QUESTION}], max_tokens=16)
    assert base.choices[0].message.content != reply.choices[0].message.content  # the memory changed the answer


def test_recollections_come_from_the_callers_memory(served):
    import httpx

    from paramem.read.recall import recall_cues, recollect

    _, url, tokens = served
    found = httpx.get(f"{url}/memory/recollections", headers={"Authorization": f"Bearer {tokens['alice']}"}, timeout=60)
    assert found.status_code == 200, found.text
    model, tokenizer, memory = load_memory("alice")
    texts = recollect(model, tokenizer, recall_cues(memory.notes()))
    assert found.json()["recollections"] == [{"id": memory.notes()[0].conversation_id, "text": texts[0]}]
    cartridge = httpx.get(f"{url}/memory/recollections", headers={"Authorization": f"Bearer {tokens['carol']}"})
    assert cartridge.status_code == 400


def test_recollections_computed_ahead_are_read_without_the_model_and_never_computed_under_a_job(
    served, demo_conversations
):
    import httpx

    server, url, tokens = served
    auth = {"Authorization": f"Bearer {tokens['alice']}"}
    first = httpx.get(f"{url}/memory/recollections", headers=auth, timeout=60).json()  # computed now, then cached
    server.engine.call = None  # the engine is not asked again: a call would fail
    assert httpx.get(f"{url}/memory/recollections", headers=auth, timeout=60).json() == first
    memory = UserMemory("alice")
    with memory.reading(memory.current_version()) as folder:
        (folder / "recall.json").unlink()  # a version just committed, its job still computing them
    left_job("alice", "job1", demo_conversations[4], state="running")
    busy = httpx.get(f"{url}/memory/recollections", headers=auth, timeout=60)
    assert busy.status_code == 409 and "job1" in busy.json()["error"]["message"]
    assert busy.headers["retry-after"] == "10"


def test_streaming_gives_the_same_reply_in_pieces(served):
    _, url, tokens = served
    bob = OpenAI(base_url=url, api_key=tokens["bob"])
    stream = bob.chat.completions.create(
        model="paramem:bob", messages=[{"role": "user", "content": QUESTION}], max_tokens=16, stream=True
    )
    chunks = list(stream)
    pieces = [c.choices[0].delta.content or "" for c in chunks]
    assert len(pieces) > 2 and "".join(pieces).strip() == expected("bob")
    assert chunks[-1].choices[0].finish_reason == "length"  # 16 tokens, no end of reply


def test_interleaved_requests_of_three_users_never_mix_memories(served):
    server, url, tokens = served
    answers = {name: expected(name) for name in tokens}
    assert len(set(answers.values())) == 3
    got: dict[str, list[str]] = {name: [] for name in tokens}

    def ask(name):
        client = OpenAI(base_url=url, api_key=tokens[name])
        for _ in range(3):
            reply = client.chat.completions.create(
                model=f"paramem:{name}", messages=[{"role": "user", "content": QUESTION}], max_tokens=16
            )
            got[name].append(reply.choices[0].message.content)

    threads = [threading.Thread(target=ask, args=(name,)) for name in tokens]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == {name: [answers[name]] * 3 for name in tokens}
    assert len(server.loaded) <= 2  # the LRU kept its size, loading memories again as needed


def test_a_newer_version_is_picked_up_by_the_next_request(served, demo_conversations):
    server, url, tokens = served
    alice = OpenAI(base_url=url, api_key=tokens["alice"])

    def ask():
        messages = [{"role": "user", "content": QUESTION}]
        return (
            alice.chat.completions.create(model="paramem:alice", messages=messages, max_tokens=16)
            .choices[0]
            .message.content
        )

    before = ask()
    loads = server.loads
    assert ask() == before and server.loads == loads  # served from the cache
    # no text kept, as alice's first conversation: the reply is the memory's own, which expected() writes
    remember("alice", demo_conversations[3:4], ExtractiveTeacher(), PLAIN)
    assert ask() == expected("alice") and server.loads == loads + 1


def test_bad_requests_get_a_json_error_with_the_right_status(served):
    import httpx

    _, url, tokens = served
    auth = {"Authorization": f"Bearer {tokens['alice']}"}
    cases = [
        ({}, b'{"model": "tiny"}', 401),
        ({"Authorization": "Bearer nope"}, b'{"model": "tiny"}', 401),
        (auth, b"{not json", 400),
        (auth, b'{"model": "tiny", "messages": []}', 400),
        (auth, b'{"model": "tiny", "messages": [{"role": "user", "content": "  "}]}', 400),
        (auth, b'{"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]}', 404),
        (auth, b'{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 9999}', 400),
    ]
    for headers, body, status in cases:
        response = httpx.post(
            f"{url}/chat/completions", content=body, headers={**headers, "Content-Type": "application/json"}
        )
        assert response.status_code == status, (body, response.text)
        assert response.json()["error"]["message"]


def test_upload_learns_in_the_background_and_forget_takes_it_out(served, demo_conversations):
    import json

    import httpx

    _, url, tokens = served
    client = httpx.Client(headers={"Authorization": f"Bearer {tokens['alice']}"}, timeout=60)
    new = demo_conversations[4]
    line = (
        json.dumps(
            {
                "id": new.id,
                "timestamp": new.timestamp,
                "messages": [{"role": m.role, "content": m.content} for m in new.messages],
            }
        )
        + "\n"
    )
    accepted = client.post(f"{url}/memory/conversations", content=line.encode())
    assert accepted.status_code == 202 and accepted.json()["total"] == 1
    done = wait_for(client, url, accepted.json()["job"])
    assert done["state"] == "done" and done["done"] == 1, done
    assert not list((UserMemory("alice").root / "jobs").glob("*.jsonl"))  # the upload is deleted once learned
    ids = [c["id"] for c in client.get(f"{url}/memory").json()["conversations"]]
    assert ids == [demo_conversations[0].id, new.id]

    gone = client.delete(f"{url}/memory/conversations/{new.id}")
    assert gone.status_code == 202 and gone.json()["kind"] == "forget"
    forgotten = wait_for(client, url, gone.json()["job"])
    assert forgotten["state"] == "done" and forgotten["result"]["how"] == "retrained", forgotten
    view = client.get(f"{url}/memory").json()
    assert [c["id"] for c in view["conversations"]] == [demo_conversations[0].id]
    assert [f["id"] for f in view["forgotten"]] == [new.id]
    assert not sentences_left(new, paramem_home(), cache_home() / "teacher")  # nor the upload, nor its notes
    assert client.delete(f"{url}/memory/conversations/nope").status_code == 404


def test_bad_uploads_store_nothing_and_say_why(served):
    import httpx

    server, url, tokens = served
    client = httpx.Client(headers={"Authorization": f"Bearer {tokens['bob']}"}, timeout=60)
    before = UserMemory("bob").learned()
    bad = client.post(f"{url}/memory/conversations", content=b'{"id": "x", "messages": [}\n')
    assert bad.status_code == 400 and "upload:1" in bad.json()["error"]["message"]
    empty = client.post(f"{url}/memory/conversations", content=b'{"id": "x", "messages": []}\n')
    assert empty.status_code == 400
    server.config.max_upload_bytes = 10
    assert client.post(f"{url}/memory/conversations", content=b"x" * 11).status_code == 413
    assert UserMemory("bob").learned() == before and not list((UserMemory("bob").root / "jobs").glob("*.jsonl"))


def test_a_job_left_running_by_a_killed_server_is_resumed(served, demo_conversations):
    import httpx

    server, url, tokens = served
    new = demo_conversations[5]
    left_job("bob", "abc", new)
    folder = UserMemory("bob").root / "jobs"
    assert server.jobs.resume() == ["abc"]
    client = httpx.Client(headers={"Authorization": f"Bearer {tokens['bob']}"}, timeout=60)
    assert wait_for(client, url, "abc")["state"] == "done"
    assert new.id in [r.id for r in UserMemory("bob").learned()]
    assert not (folder / "abc.jsonl").exists()


def test_a_learning_process_that_dies_fails_its_job_and_the_server_goes_on(served, demo_conversations):
    import json
    import os
    import signal

    import httpx

    server, url, tokens = served
    client = httpx.Client(headers={"Authorization": f"Bearer {tokens['bob']}"}, timeout=60)
    new = demo_conversations[6]
    line = json.dumps({"id": new.id, "messages": [{"role": m.role, "content": m.content} for m in new.messages]})
    job = client.post(f"{url}/memory/conversations", content=(line + "\n").encode()).json()["job"]
    while job not in server.jobs.children:
        time.sleep(0.05)
    os.kill(server.jobs.children[job].pid, signal.SIGKILL)  # as the kernel's OOM killer would
    failed = wait_for(client, url, job)
    assert failed["state"] == "failed" and "learning process stopped" in failed["message"]
    assert "pid" not in failed and str(server.jobs.config.home or "") not in json.dumps(failed)  # no internals
    assert not list((UserMemory("bob").root / "jobs").glob(f"{job}.*l*"))  # upload and log deleted
    assert new.id not in [r.id for r in UserMemory("bob").learned()]
    assert client.get(f"{url}/models").status_code == 200


def test_a_job_whose_process_outlived_the_server_is_waited_for_not_run_twice(served, demo_conversations):
    import subprocess
    import sys

    server, _, _ = served
    new = demo_conversations[5]
    # a process that looks like this job's child, left by a killed server; it ends without ending the job
    orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(2)", "paramem.serve.jobs", "live"])
    left_job("bob", "live", new, pid=orphan.pid)
    assert server.jobs.resume() == ["live"]
    time.sleep(1)
    assert server.jobs.status("bob", "live")["state"] == "running" and "live" not in server.jobs.children
    orphan.wait()
    end = time.time() + 120
    while server.jobs.status("bob", "live")["state"] != "done" and time.time() < end:  # then run, once
        time.sleep(0.2)
    assert new.id in [r.id for r in UserMemory("bob").learned()]


def test_an_lru_of_one_switching_between_forms_serves_each_user_right(served):
    server, url, tokens = served
    server.memories.cache_size = 1  # every switch evicts: peft keeps its last adapter, which is reused
    answers = {name: expected(name) for name in tokens}
    for name in ("alice", "carol", "alice", "bob", "carol", "alice"):
        client = OpenAI(base_url=url, api_key=tokens[name])
        reply = client.chat.completions.create(
            model=f"paramem:{name}", messages=[{"role": "user", "content": QUESTION}], max_tokens=16
        )
        assert reply.choices[0].message.content == answers[name], name
        assert len(server.loaded) == 1


def test_milp_memory_is_served_beside_the_plum_one(served, demo_conversations):
    import httpx

    from paramem.config import MiLPTrainConfig, MultiLoraConfig
    from paramem.lifecycle.personalise import load_milp_memory
    from paramem.memory.milp.model import REPLY_SYSTEM, learn
    from paramem.model.loading import tiny_model

    server, url, tokens = served
    model, tokenizer = tiny_model()
    config = MiLPTrainConfig(memory_epochs=1, instruction_epochs=2, learning_rate=5e-3)
    learned = learn(model, tokenizer, demo_conversations[:2], MultiLoraConfig(loras=2, rank=4), config)
    with UserMemory("alice") as memory:
        memory.milp.commit(
            learned.save_pretrained,
            {
                "base_model": "tiny",
                "dtype": "float32",
                "memory": {},
                "described": "n=2 r=4",
                "conversations": [c.id for c in demo_conversations[:2]],
            },
        )
    alice = OpenAI(base_url=url, api_key=tokens["alice"])
    view = httpx.get(f"{url}/memory", headers={"Authorization": f"Bearer {tokens['alice']}"})  # the page's view
    assert view.json()["milp"] == {"memory": "n=2 r=4", "conversations": [c.id for c in demo_conversations[:2]]}
    assert [m.id for m in alice.models.list()] == ["tiny", "paramem:alice", "paramem-milp:alice"]
    chat = [{"role": "user", "content": QUESTION}]
    milp = alice.chat.completions.create(model="paramem-milp:alice", messages=chat, max_tokens=16)
    plum = alice.chat.completions.create(model="paramem:alice", messages=chat, max_tokens=16)
    local, local_tokenizer, _ = load_milp_memory("alice")
    assert milp.choices[0].message.content == generate(local, local_tokenizer, chat, 16, REPLY_SYSTEM)
    assert plum.choices[0].message.content == expected("alice")  # the two memories never mix
    with pytest.raises(PermissionDeniedError):
        alice.chat.completions.create(model="paramem-milp:bob", messages=chat, max_tokens=4)
