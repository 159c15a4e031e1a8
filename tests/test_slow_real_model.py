"""On the real embedded model: learning one conversation makes probes it never saw come out better, and
forgetting it takes that back without losing the others."""

import pytest
from conftest import DEMO

from paramem.augment.pairs import PairConfig
from paramem.augment.teachers.extractive import ExtractiveTeacher
from paramem.config import RememberConfig, TrainConfig
from paramem.data.notes import content_words
from paramem.evaluate.probes import load_probes
from paramem.lifecycle.remember import remember
from paramem.read.loading import load_memory
from paramem.read.recall import RecallConfig, SentenceMatcher, recall_cues, recollect
from paramem.store.user import UserMemory


def separation(scores, labels):
    """Mean score of the yes probes minus that of the no probes: > 0 ranks them the right way."""
    yes = [s for s, label in zip(scores, labels) if label == "yes"]
    no = [s for s, label in zip(scores, labels) if label == "no"]
    return sum(yes) / len(yes) - sum(no) / len(no)


@pytest.mark.slow
def test_memory_recalls_its_conversation_and_separates_probes_it_never_saw(demo_conversations):
    garden = demo_conversations[0]
    # The last of 3 epochs is kept: this tests that learning works, not the epoch choice (which reads
    # held-out pairs by the answer token and, at chance there, may keep the first epoch).
    config = RememberConfig(train=TrainConfig(epochs=3, early_stopping=False, pairs=PairConfig(max_pairs=20)))
    remember("slow", [garden], ExtractiveTeacher(), config)
    model, tokenizer, _ = load_memory("slow")
    notes = UserMemory("slow").notes()

    # Recall: asked only the conversation's date, the memory writes back its topics; the base model cannot.
    recall = RecallConfig(branches=4, max_new_tokens=40)
    recalled = recollect(model, tokenizer, recall_cues(notes), recall)
    with model.disable_adapter():
        base = recollect(model, tokenizer, recall_cues(notes), recall)
    topic_words = content_words(" ".join(t.name for t in notes[0].topics))
    assert sum(w in recalled[0].lower() for w in topic_words) > sum(w in base[0].lower() for w in topic_words)

    # The demo's probes for this conversation, written apart from paramem and never used to learn,
    # to choose an epoch or to set a threshold: the memory's recollection ranks them better.
    probes = [p for p in load_probes(DEMO / "probes.jsonl") if p.conversation == garden.id]
    questions, labels = [p.question for p in probes], [p.answer for p in probes]
    memory_scores = SentenceMatcher(recalled).scores(questions)
    none_scores = SentenceMatcher(base).scores(questions)
    assert separation(memory_scores, labels) > max(separation(none_scores, labels), 0)


@pytest.mark.slow
def test_forgetting_moves_its_probes_to_no_and_keeps_the_others(demo_conversations):
    from paramem.lifecycle.forget import forget
    from paramem.read.readers import ask

    garden, marathon = demo_conversations[0], demo_conversations[2]
    config = RememberConfig(train=TrainConfig(epochs=3, early_stopping=False, pairs=PairConfig(max_pairs=20)))
    remember("forgetful", [garden, marathon], ExtractiveTeacher(), config)
    probes = {
        c.id: [p for p in load_probes(DEMO / "probes.jsonl") if p.conversation == c.id] for c in (garden, marathon)
    }

    def answers() -> dict:
        """Each conversation's probes as `paramem ask` answers them: (gold, answer, margin)."""
        model, tokenizer, memory = load_memory("forgetful")
        return {
            cid: [
                (p.answer, a.answer, a.margin)
                for p, a in zip(ps, ask(model, tokenizer, memory, [p.question for p in ps]))
            ]
            for cid, ps in probes.items()
        }

    def accuracy(rows) -> float:
        return sum(gold == answer for gold, answer, _ in rows) / len(rows)

    before = answers()
    assert forget("forgetful", garden.id).relearned == 1
    after = answers()
    # the forgotten conversation's facts move toward "no": every yes probe's margin falls, below 0 on average
    garden_yes = [(b[2], a[2]) for b, a in zip(before[garden.id], after[garden.id]) if b[0] == "yes"]
    assert all(a < b for b, a in garden_yes)
    assert sum(a for _, a in garden_yes) < 0 < sum(b for b, _ in garden_yes)
    # the kept one is learned again from its own notes, not restored: its accuracy holds to within a probe
    assert accuracy(after[marathon.id]) >= accuracy(before[marathon.id]) - 1 / len(probes[marathon.id])
    assert all(answer == "yes" for gold, answer, _ in after[marathon.id] if gold == "yes")


@pytest.mark.slow
def test_a_gguf_file_given_by_path_loads_like_its_preset():
    import torch

    from paramem.model.loading import PRESETS, load_model, preset_gguf

    gguf = preset_gguf(PRESETS["smollm2-135m"])
    by_path, tokenizer = load_model(str(gguf))
    by_preset, _ = load_model("smollm2-135m")
    ids = torch.tensor([tokenizer("Did we talk about tomatoes?")["input_ids"]])
    with torch.inference_mode():
        torch.testing.assert_close(by_path(input_ids=ids).logits, by_preset(input_ids=ids).logits)


@pytest.mark.slow
def test_qwen_merges_across_the_memory_head_and_hybrid_prompts_keep_it_for_cartridges():
    """Qwen2.5 tokenizes "user.\n\n" with ".\n\n" as one token, so a retrieval prompt tokenized whole
    does not start with the memory head; split at the slot it does, and a cartridge memory reads it."""
    from paramem.memory.cartridge import Cartridge, CartridgeModel, memory_head, slot_cache
    from paramem.model.loading import load_model
    from paramem.model.prompts import encode_prompt
    from paramem.model.scoring import LogOddsReader, YesNoScorer
    from paramem.read.answer import answer_many
    from paramem.read.retrieval import Passage, retrieval_prompt

    model, tokenizer = load_model("qwen2.5-0.5b")
    head = memory_head(tokenizer)
    system = retrieval_prompt([Passage("s1", "Tim: I planted tomatoes on the balcony.")])
    question = "Did we talk about tomatoes?"
    assert encode_prompt(tokenizer, question, system)[: len(head)] != head  # the trap
    assert encode_prompt(tokenizer, question, system, slot=True)[: len(head)] == head
    slot = tokenizer("\n\nOur conversation:\nTim: tomatoes.", add_special_tokens=False)["input_ids"]
    memory = CartridgeModel(model, tokenizer, [Cartridge("s1", *slot_cache(model, head, slot))])
    assert len(YesNoScorer(memory, tokenizer).log_odds([question], [system])) == 1
    assert len(answer_many(memory, tokenizer, [question], [system], 2)) == 1
    read = len(encode_prompt(tokenizer, question, system, slot=True)) + memory.prefix_tokens
    assert LogOddsReader(memory, tokenizer, lambda qs: [system] * len(qs)).prompt_tokens([question]) == read
