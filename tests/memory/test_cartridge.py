import os

import pytest
import torch

from paramem.augment.teachers.extractive import ExtractiveTeacher
from paramem.memory.cartridge import Cartridge, CartridgeModel, memory_head, rotate_keys, slot_cache, slot_prompt
from paramem.memory.distill_teacher import conversation_slot
from paramem.model.generate import generate
from paramem.model.loading import decoder_and_head, tiny_model
from paramem.model.prompts import SYSTEM_PROMPT, _template_parts, encode_prompt
from paramem.model.scoring import YesNoScorer, last_hidden_states

QUESTIONS = ["Did we talk about tomatoes?", "What did I say about the balcony?", "Did we discuss taxes?"]


def full_cartridge(model, tokenizer, conversation, tokens=None):
    """A cartridge holding the base model's own keys and values of the conversation (or its start)."""
    slot = conversation_slot(tokenizer, conversation, "2 March 2026")[:tokens]
    keys, values = slot_cache(model, memory_head(tokenizer), slot)
    return Cartridge(conversation.id, keys, values), slot


@torch.inference_mode()
def last_logits(model, prompt):
    return model(input_ids=torch.tensor([prompt])).logits[0, -1].float()


def test_the_head_is_where_every_paramem_prompt_starts_and_the_cut_is_exact():
    model, tokenizer = tiny_model()
    head = memory_head(tokenizer)
    for question in QUESTIONS:
        assert encode_prompt(tokenizer, question)[: len(head)] == head
    assert tokenizer.decode(head).endswith(SYSTEM_PROMPT)


def test_a_cartridge_of_the_conversations_own_keys_answers_exactly_as_the_teacher(demo_conversations):
    model, tokenizer = tiny_model()
    cartridge, slot = full_cartridge(model, tokenizer, demo_conversations[0])
    memory = CartridgeModel(model, tokenizer, [cartridge])
    head = memory_head(tokenizer)
    for question in QUESTIONS:
        prompt = encode_prompt(tokenizer, question)
        teacher = last_logits(model, slot_prompt(head, slot, prompt))
        torch.testing.assert_close(last_logits(memory, prompt), teacher, atol=1e-4, rtol=1e-4)
    assert memory.prefix_tokens == len(slot)


def test_re_rotating_keys_is_exactly_reading_them_later():
    """RoPE is relative: the same tokens read from position s + d have the keys read from s, rotated by d."""
    model, _ = tiny_model()
    ids = torch.tensor([[5, 17, 42, 99, 7, 63]])
    decoder = model.get_decoder()

    def keys_from(start):
        positions = torch.arange(start, start + ids.shape[1]).unsqueeze(0)
        with torch.inference_mode():
            cache = decoder(input_ids=ids, position_ids=positions, use_cache=True).past_key_values
        return [layer.keys for layer in cache.layers]

    inv_freq = decoder.rotary_emb.inv_freq
    for early, late in zip(keys_from(3), keys_from(3 + 40)):
        torch.testing.assert_close(rotate_keys(early, 40, inv_freq), late, atol=1e-5, rtol=1e-5)


def test_composing_two_then_dropping_one_gives_exactly_the_other_alone(demo_conversations, tmp_path):
    model, tokenizer = tiny_model()
    first, _ = full_cartridge(model, tokenizer, demo_conversations[0], 24)
    second, _ = full_cartridge(model, tokenizer, demo_conversations[1], 16)
    both = CartridgeModel(model, tokenizer, [first, second])
    scorer = YesNoScorer(both, tokenizer)
    composed = scorer.log_odds(QUESTIONS)
    assert both.prefix_tokens == 40

    both.save_pretrained(tmp_path / "v1")
    reloaded = CartridgeModel.from_pretrained(model, tokenizer, tmp_path / "v1")
    assert YesNoScorer(reloaded, tokenizer).log_odds(QUESTIONS) == pytest.approx(composed, abs=1e-6)
    # forgetting the first: the next version holds the second alone, linked, not rewritten
    del reloaded.cartridges[0]
    reloaded.save_pretrained(tmp_path / "v2")
    assert os.path.samefile(tmp_path / "v1" / "00001.safetensors", tmp_path / "v2" / "00000.safetensors")
    dropped = YesNoScorer(CartridgeModel.from_pretrained(model, tokenizer, tmp_path / "v2"), tokenizer)
    alone = YesNoScorer(CartridgeModel(model, tokenizer, [second]), tokenizer)
    assert dropped.log_odds(QUESTIONS) == alone.log_odds(QUESTIONS)
    assert alone.log_odds(QUESTIONS) != pytest.approx(composed, abs=1e-4)  # the first one was read


def test_the_scorer_the_loss_and_generation_read_the_cartridge(demo_conversations):
    from paramem.config import TrainConfig
    from paramem.memory.distill import distill_batches, distillation_loss, encode_target
    from paramem.memory.distill_teacher import teacher_targets

    model, tokenizer = tiny_model()
    cartridge, slot = full_cartridge(model, tokenizer, demo_conversations[0], 32)
    memory = CartridgeModel(model, tokenizer, [cartridge.learnable()])
    with_memory = YesNoScorer(memory, tokenizer).log_odds(QUESTIONS)
    with memory.disable_adapter():
        without = YesNoScorer(memory, tokenizer).log_odds(QUESTIONS)
    assert without == pytest.approx(YesNoScorer(model, tokenizer).log_odds(QUESTIONS), abs=1e-5)
    assert with_memory != pytest.approx(without, abs=1e-3)

    # the shared-prompt cache path gives what one prompt at a time gives
    decoder, _ = decoder_and_head(memory)
    prompts = [encode_prompt(tokenizer, q) for q in QUESTIONS]
    batched = last_hidden_states(decoder, prompts, tokenizer.pad_token_id)
    with torch.inference_mode():
        for row, prompt in enumerate(prompts):
            single = decoder(input_ids=torch.tensor([prompt])).last_hidden_state[0, -1].float()
            torch.testing.assert_close(batched[row], single, atol=1e-4, rtol=1e-4)

    config = TrainConfig(
        objective="distill", distill_checks=0, distill_queries=2, distill_top_k=5, distill_answer_tokens=3
    )
    notes = ExtractiveTeacher().notes(demo_conversations[0])
    targets, _ = teacher_targets(model, tokenizer, demo_conversations[0], notes, config)
    [batch] = distill_batches(
        [encode_target(tokenizer, t) for t in targets], 8, tokenizer.pad_token_id, __import__("random").Random(0)
    )
    loss = distillation_loss(memory, batch)
    loss.backward()
    assert cartridge.keys.grad is not None and cartridge.keys.grad.abs().sum() > 0
    assert cartridge.values.grad.abs().sum() > 0
    with memory.disable_adapter():
        assert distillation_loss(memory, batch).item() != pytest.approx(loss.item(), abs=1e-4)

    # generation: the cartridge as a filled cache gives the teacher's own greedy continuation
    full, slot = full_cartridge(model, tokenizer, demo_conversations[0])
    reader = CartridgeModel(model, tokenizer, [full])
    prompt = encode_prompt(tokenizer, QUESTIONS[1])
    with torch.inference_mode():
        teacher = model.generate(
            input_ids=torch.tensor([slot_prompt(memory_head(tokenizer), slot, prompt)]),
            max_new_tokens=6,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
        )[0, len(prompt) + len(slot) :]
    student = reader.generate(
        input_ids=torch.tensor([prompt]), max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id
    )
    assert student.shape[1] == len(prompt) + 6 and student[0, len(prompt) :].tolist() == teacher.tolist()
    assert (
        generate(reader, tokenizer, [{"role": "user", "content": QUESTIONS[1]}], 6)
        == tokenizer.decode(teacher, skip_special_tokens=True).strip()
    )


def test_retrieved_passages_after_the_system_prompt_are_read_with_the_cartridges(demo_conversations):
    """The hybrid method: a cartridge memory with passages in the system prompt after SYSTEM_PROMPT.
    The prompt's text after the head is tokenized apart (`slot`), so the head is intact even where a
    tokenizer merges across it; scoring and generation both read head, cartridge, passages."""
    from paramem.read.answer import answer_many

    model, tokenizer = tiny_model()
    cartridge, slot = full_cartridge(model, tokenizer, demo_conversations[0], 8)
    memory = CartridgeModel(model, tokenizer, [cartridge])
    head = memory_head(tokenizer)
    system = SYSTEM_PROMPT + ".\n\nExcerpts of past conversations with this user that may be relevant:\n- tomatoes"
    prompt = encode_prompt(tokenizer, QUESTIONS[0], system, slot=True)
    before, _, _ = _template_parts(tokenizer, system)
    assert prompt[: len(head)] == head and tokenizer.decode(prompt).startswith(before)
    teacher = last_logits(model, slot_prompt(head, slot, prompt))
    torch.testing.assert_close(last_logits(memory, prompt), teacher, atol=1e-4, rtol=1e-4)
    scorer = YesNoScorer(memory, tokenizer)
    [score] = scorer.log_odds([QUESTIONS[0]], [system])
    by_hand = teacher.log_softmax(-1)
    assert score == pytest.approx(
        (by_hand[scorer.yes_ids].logsumexp(-1) - by_hand[scorer.no_ids].logsumexp(-1)).item(), abs=1e-3
    )
    [reply] = answer_many(memory, tokenizer, [QUESTIONS[0]], [system], 4)
    ids = torch.tensor([slot_prompt(head, slot, prompt)])
    expected = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, do_sample=False)
    assert reply == tokenizer.decode(expected[0, ids.shape[1] :], skip_special_tokens=True).strip()


def test_without_a_slot_the_prompt_is_the_chat_templates_token_for_token():
    _, tokenizer = tiny_model()
    system = SYSTEM_PROMPT + "\n\nExcerpts: tomatoes"
    chat = [{"role": "system", "content": system}, {"role": "user", "content": QUESTIONS[1]}]
    templated = tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_dict=True)["input_ids"]
    assert encode_prompt(tokenizer, QUESTIONS[1], system) == templated


def test_a_prompt_without_paramems_system_prompt_is_refused_not_read_without_memory(demo_conversations):
    model, tokenizer = tiny_model()
    cartridge, _ = full_cartridge(model, tokenizer, demo_conversations[0], 8)
    memory = CartridgeModel(model, tokenizer, [cartridge])
    with pytest.raises(ValueError, match="system prompt"):
        memory(input_ids=torch.tensor([encode_prompt(tokenizer, "Hi?", "You are a pirate.")]))


def test_remember_learns_a_cartridge_per_conversation_and_answers_from_them(demo_conversations, tmp_path):
    from typer.testing import CliRunner

    from paramem.cli.main import app
    from paramem.config import RememberConfig, TrainConfig
    from paramem.lifecycle.remember import remember
    from paramem.read.loading import load_memory
    from paramem.read.readers import ask, default_readout
    from paramem.store.user import UserMemory

    train = TrainConfig(
        objective="distill",
        form="cartridge",
        epochs=2,
        min_epochs=1,
        distill_queries=2,
        distill_answer_tokens=3,
        distill_checks=0,
    )
    config = RememberConfig(base_model="tiny", train=train)
    remember("k", demo_conversations[:1], ExtractiveTeacher(), config)
    learned = remember("k", demo_conversations[:2], ExtractiveTeacher(), config)  # a second run adds one
    assert [r.id for r in learned] == [demo_conversations[1].id]
    model, tokenizer, memory = load_memory("k")
    assert isinstance(model, CartridgeModel) and default_readout(memory) == "log-odds"
    assert [c.conversation_id for c in model.cartridges] == [c.id for c in demo_conversations[:2]]
    slot = conversation_slot(tokenizer, demo_conversations[0], ExtractiveTeacher().notes(demo_conversations[0]).date)
    assert model.cartridges[0].tokens == max(16, round(len(slot) * train.cartridge_fraction))
    assert UserMemory("k").current_version() == 2
    # learned alone: the first cartridge is the one a memory of the first conversation alone holds
    remember("k1", demo_conversations[:1], ExtractiveTeacher(), config)
    [only] = load_memory("k1")[0].cartridges
    assert torch.equal(only.keys, model.cartridges[0].keys) and torch.equal(only.values, model.cartridges[0].values)
    [answer] = ask(model, tokenizer, memory, ["Did we talk about tomatoes?"])
    assert answer.answer in ("yes", "no") and answer.evidence is None
    [balanced] = ask(model, tokenizer, memory, ["Did we talk about tomatoes?"], rule="balanced")
    assert answer.margin == balanced.margin  # cartridges read alone: the balanced rule by default
    with pytest.raises(Exception, match="recall readout reads sequential"):
        ask(model, tokenizer, memory, ["Did we talk about tomatoes?"], "recall")

    # a memory keeps its form; the cartridge form needs the distill objective
    with pytest.raises(Exception, match="is a cartridge memory"):
        remember("k", demo_conversations[:3], ExtractiveTeacher(), RememberConfig(base_model="tiny"))
    path = tmp_path / "c.jsonl"
    path.write_text((__import__("conftest").DEMO / "conversations.jsonl").read_text().splitlines()[0] + "\n")
    result = CliRunner().invoke(
        app, ["remember", str(path), "--user", "z", "--base-model", "tiny", "--form", "cartridge"]
    )
    assert result.exit_code == 2 and "distill for the cartridge form" in result.output


def test_questions_answered_in_a_batch_read_the_cartridges_as_each_alone_does(demo_conversations):
    """`answer_many` decodes questions together after their shared start: with the cartridges
    alone (the prompts part right after the head) or with shared passages after them."""
    from paramem.read.answer import answer_many

    model, tokenizer = tiny_model()
    cartridge, slot = full_cartridge(model, tokenizer, demo_conversations[0], 8)
    memory = CartridgeModel(model, tokenizer, [cartridge])
    head = memory_head(tokenizer)
    passages = SYSTEM_PROMPT + ".\n\nExcerpts of past conversations with this user that may be relevant:\n- tomatoes"
    for systems in ([SYSTEM_PROMPT, passages, SYSTEM_PROMPT], [passages] * 3):
        expected = []
        for question, system in zip(QUESTIONS, systems):
            ids = torch.tensor([slot_prompt(head, slot, encode_prompt(tokenizer, question, system, slot=True))])
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=5, do_sample=False)
            expected.append(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip())
        assert answer_many(memory, tokenizer, QUESTIONS, systems, 5) == expected
