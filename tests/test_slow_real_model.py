"""On the real embedded model: learning one conversation makes probes it never saw come out better."""

import pytest
from conftest import DEMO

from paramem.answer import load_memory
from paramem.augment.notes import content_words
from paramem.augment.pairs import PairConfig
from paramem.augment.teachers import ExtractiveTeacher
from paramem.evaluate.probes import load_probes
from paramem.recall import RecallConfig, SentenceMatcher, recall_cues, recollect
from paramem.remember import RememberConfig, remember
from paramem.store import UserMemory
from paramem.train import TrainConfig


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
def test_a_gguf_file_given_by_path_loads_like_its_preset():
    import torch

    from paramem.models import PRESETS, load_model, preset_gguf

    gguf = preset_gguf(PRESETS["smollm2-135m"])
    by_path, tokenizer = load_model(str(gguf))
    by_preset, _ = load_model("smollm2-135m")
    ids = torch.tensor([tokenizer("Did we talk about tomatoes?")["input_ids"]])
    with torch.inference_mode():
        torch.testing.assert_close(by_path(input_ids=ids).logits, by_preset(input_ids=ids).logits)
