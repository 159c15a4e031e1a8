"""The server answers through the answer path: a user's own stored text, read by the base model, and
an upload is answerable from its text before the memory has learned it (issue 38)."""

import httpx
from openai import OpenAI
from serve_helpers import QUESTION, start, upload_line, wait_for

from paramem.augment.teachers.extractive import ExtractiveTeacher
from paramem.config import RememberConfig, TrainConfig
from paramem.lifecycle.remember import remember
from paramem.model.generate import generate
from paramem.model.loading import tiny_model
from paramem.read.respond import Responder
from paramem.serve.config import ServeConfig
from paramem.serve.server import MemoryServer
from paramem.store.user import UserMemory

KEPT = RememberConfig(base_model="tiny", train=TrainConfig(epochs=1, min_epochs=1))


def serving(home, *users):
    tokens = {}
    for name in users:
        with UserMemory(name) as memory:
            tokens[name] = memory.tokens.new()
    server = MemoryServer(ServeConfig("tiny", home, max_new_tokens=8))
    uv, thread, url = start(server)
    return server, uv, thread, url, tokens


def from_text(user: str, question: str, tokens: int = 8) -> str:
    """What the base model says under the passages of `user`'s own stored text for `question`."""
    base, tokenizer = tiny_model()
    system = Responder(None, tokenizer, UserMemory(user).texts.conversations()).system_for(question)
    return generate(base.eval(), tokenizer, [{"role": "user", "content": question}], tokens, system)


def test_a_user_with_stored_text_is_answered_from_their_own_passages_only(demo_conversations, isolated_home):
    remember("dora", demo_conversations[:2], ExtractiveTeacher(), KEPT)
    remember("eve", demo_conversations[2:4], ExtractiveTeacher(), KEPT)
    server, uv, thread, url, tokens = serving(isolated_home, "dora", "eve")
    try:
        dora = OpenAI(base_url=url, api_key=tokens["dora"])
        reply = dora.chat.completions.create(
            model="paramem:dora", messages=[{"role": "user", "content": QUESTION}], max_tokens=8
        )
        assert reply.choices[0].message.content == from_text("dora", QUESTION)
        system = Responder(None, server.tokenizer, UserMemory("dora").texts.conversations()).system_for(QUESTION)
        for conversation in demo_conversations[2:4]:  # eve's words never reach dora's prompt
            assert not any(m.content in system for m in conversation.messages)
        read = server.tokenizer.apply_chat_template(
            [{"role": "system", "content": system}, {"role": "user", "content": QUESTION}],
            add_generation_prompt=True,
            return_dict=True,
        )
        assert reply.usage.prompt_tokens == len(read["input_ids"])
        assert not server.loaded  # the text held everything: no adapter was loaded
    finally:
        uv.should_exit = True
        thread.join(10)


def test_an_upload_is_answerable_before_its_learning_ends(demo_conversations, isolated_home):
    server, uv, thread, url, tokens = serving(isolated_home, "fay")
    client = httpx.Client(headers={"Authorization": f"Bearer {tokens['fay']}"}, timeout=60)
    fay = OpenAI(base_url=url, api_key=tokens["fay"])
    try:
        assert [m.id for m in fay.models.list()] == ["tiny"]  # nothing stored yet
        holder = UserMemory("fay").lock()  # another run holds the user: the job cannot learn yet
        try:
            accepted = client.post(f"{url}/memory/conversations", content=upload_line(demo_conversations[0]))
            assert accepted.status_code == 202
            assert [m.id for m in fay.models.list()] == ["tiny", "paramem:fay"]
            [row] = client.get(f"{url}/memory").json()["conversations"]
            assert (row["id"], row["state"], row["text_kept"]) == (demo_conversations[0].id, "consolidating", True)
            reply = fay.chat.completions.create(
                model="paramem:fay", messages=[{"role": "user", "content": QUESTION}], max_tokens=8
            )
            assert reply.choices[0].message.content == from_text("fay", QUESTION)
            assert UserMemory("fay").learned() == []
        finally:
            holder.unlock()
        done = wait_for(client, url, accepted.json()["job"])
        assert done["state"] == "done", done
        [row] = client.get(f"{url}/memory").json()["conversations"]
        assert (row["state"], row["text_kept"]) == ("consolidated", True)
    finally:
        uv.should_exit = True
        thread.join(10)
