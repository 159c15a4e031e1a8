"""Forgetting, deleting and exporting a user's memory (the lifecycle of issue "Living with memory")."""

import pytest
import torch
from conftest import sentences_left
from typer.testing import CliRunner

from paramem.augment.teachers.extractive import ExtractiveTeacher
from paramem.augment.teaching import NotesCache
from paramem.cli.main import app
from paramem.config import RememberConfig, TrainConfig
from paramem.errors import InputError
from paramem.files import cache_home, paramem_home
from paramem.lifecycle.forget import forget
from paramem.lifecycle.remember import remember
from paramem.model.scoring import YesNoScorer
from paramem.read.loading import load_memory
from paramem.store.user import UserMemory

CARTRIDGE = RememberConfig(
    base_model="tiny",
    train=TrainConfig(
        objective="distill", distill_checks=0, form="cartridge", epochs=1, distill_queries=2, distill_answer_tokens=3
    ),
)
SEQUENTIAL = RememberConfig(base_model="tiny", train=TrainConfig(epochs=1, min_epochs=1))
QUESTIONS = ["Did we talk about tomatoes?", "Did we discuss the marathon?"]


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PARAMEM_CACHE", str(tmp_path / "cache"))


def test_forgetting_a_cartridge_is_exact_and_leaves_no_sentence_of_it(demo_conversations):
    first, second, third = demo_conversations[:3]
    remember("f", [first, second, third], ExtractiveTeacher(), CARTRIDGE)
    assert sentences_left(second, paramem_home(), cache_home())  # the notes hold its sentences before
    result = forget("f", second.id)
    assert (result.how, result.exact, result.relearned) == ("dropped", True, 0)

    model, tokenizer, memory = load_memory("f")
    assert [c.conversation_id for c in model.cartridges] == [first.id, third.id]
    # exactly a memory that never learned it
    remember("g", [first, third], ExtractiveTeacher(), CARTRIDGE)
    never, _, _ = load_memory("g")
    assert YesNoScorer(model, tokenizer).log_odds(QUESTIONS) == YesNoScorer(never, tokenizer).log_odds(QUESTIONS)
    assert [r.id for r in memory.learned()] == [first.id, third.id]
    assert [f for f, _ in memory.forgotten()] == [second.id]
    assert memory.targets(second.id) is None
    assert not sentences_left(second, paramem_home(), cache_home())
    assert UserMemory("f").targets(first.id) is not None  # the others' are kept


def test_forgetting_in_a_sequential_memory_learns_the_others_again(demo_conversations):
    # the marathon's text contradicts no negative of the garden's or the cat's notes, so here the
    # retraining is exact; where it does, those negatives stay dropped (Forgotten.note)
    first, second, third = demo_conversations[0], demo_conversations[2], demo_conversations[3]
    remember("s", [first, second, third], ExtractiveTeacher(), SEQUENTIAL)
    result = forget("s", second.id)
    assert (result.how, result.exact, result.relearned) == ("retrained", False, 2) and "negatives" in result.note
    model, tokenizer, memory = load_memory("s")
    assert [r.id for r in memory.learned()] == [first.id, third.id]
    assert {r.adapter_version for r in memory.learned()} == {memory.current_version()}
    # the same as learning the kept two from the start (no negative of theirs was contradicted by it)
    remember("t", [first, third], ExtractiveTeacher(), SEQUENTIAL)
    fresh, _, fresh_memory = load_memory("t")
    assert [n.to_dict() for n in memory.notes()] == [n.to_dict() for n in fresh_memory.notes()]
    for (name, a), (_, b) in zip(model.named_parameters(), fresh.named_parameters()):
        assert torch.equal(a, b), name
    assert not sentences_left(second, paramem_home(), cache_home())
    assert len(list((paramem_home() / "users" / "s" / "versions").iterdir())) <= 2  # one version (+ its lock)


def test_forgetting_the_last_conversation_leaves_an_empty_memory_and_bad_ids_are_one_line(demo_conversations):
    remember("e", demo_conversations[:1], ExtractiveTeacher(), SEQUENTIAL)
    with pytest.raises(InputError, match="no learned conversation 'nope'"):
        forget("e", "nope")
    forget("e", demo_conversations[0].id)
    assert UserMemory("e").learned() == [] and UserMemory("e").current_version() is None
    result = CliRunner().invoke(app, ["forget", "--user", "e", "--conversation", demo_conversations[0].id])
    assert result.exit_code == 2 and "no learned conversation" in result.output


def test_users_delete_and_export_from_the_cli(demo_conversations, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from paramem.model.loading import tiny_model
    from paramem.model.prompts import encode_prompt

    remember("a", demo_conversations[:1], ExtractiveTeacher(), SEQUENTIAL)
    remember("b", demo_conversations[1:2], ExtractiveTeacher(), CARTRIDGE)
    runner = CliRunner()
    listed = runner.invoke(app, ["users"])
    assert (
        listed.exit_code == 0
        and "a  1 conversations (1 consolidated)  sequential" in listed.output
        and "b  1 conversations (1 consolidated)  cartridge" in listed.output
    )
    listed = runner.invoke(app, ["users", "--conversations"])
    assert f"  {demo_conversations[0].id}  consolidated  text kept" in listed.output

    assert runner.invoke(app, ["export", "--user", "a", "--out", str(tmp_path / "peft")]).exit_code == 0
    peft = PeftModel.from_pretrained(tiny_model()[0], str(tmp_path / "peft"))
    result = runner.invoke(app, ["export", "--user", "a", "--out", str(tmp_path / "full"), "--format", "merged"])
    assert result.exit_code == 0, result.output
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "full")
    ids = torch.tensor([encode_prompt(tiny_model()[1], "Did we talk about tomatoes?")])
    with torch.inference_mode():
        torch.testing.assert_close(merged(ids).logits, peft(ids).logits, atol=1e-4, rtol=1e-4)
    refused = runner.invoke(app, ["export", "--user", "b", "--out", str(tmp_path / "c")])
    assert refused.exit_code == 2 and "cartridge" in refused.output

    cache = NotesCache(cache_home() / "teacher")
    assert list(cache.root.rglob(f"{demo_conversations[0].content_hash}.json"))
    assert runner.invoke(app, ["delete", "--user", "a", "--yes"]).exit_code == 0
    assert not (paramem_home() / "users" / "a").exists()
    assert not list(cache.root.rglob(f"{demo_conversations[0].content_hash}.json"))
    assert runner.invoke(app, ["users"]).output.strip().startswith("b")


def test_forgetting_a_conversation_indexed_but_not_learned_deletes_its_text(demo_conversations, monkeypatch):
    import paramem.lifecycle.remember as remember_module

    first = demo_conversations[0]
    with monkeypatch.context() as patched, pytest.raises(KeyboardInterrupt):
        patched.setattr(remember_module, "load_model", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
        remember("f", [first], ExtractiveTeacher(), SEQUENTIAL)  # stopped after indexing
    result = forget("f", first.id)
    assert (result.how, result.exact, result.relearned) == ("unindexed", True, 0)
    assert not sentences_left(first, paramem_home(), cache_home())
    assert [i for i, _ in UserMemory("f").forgotten()] == [first.id]
