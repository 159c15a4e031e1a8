"""On the real embedded model: learning one conversation makes its reworded probes come out better."""

import pytest

from paramem.answer import YesNoScorer, load_memory
from paramem.augment.notes import content_words
from paramem.augment.pairs import validation_pairs
from paramem.augment.teachers import ExtractiveTeacher
from paramem.recall import RecallConfig, recall_cues, recollect
from paramem.remember import RememberConfig, remember
from paramem.store import UserMemory
from paramem.train import TrainConfig


def right_leaning(scores, labels):
    """Mean log-odds toward the right answer: > 0 leans right, < 0 leans wrong."""
    return sum(s if label == "yes" else -s for s, label in zip(scores, labels)) / len(scores)


@pytest.mark.slow
def test_memory_answers_its_conversations_reworded_probes_better_than_no_memory(demo_conversations):
    garden = demo_conversations[0]
    remember("slow", [garden], ExtractiveTeacher(), RememberConfig(train=TrainConfig(epochs=4)))
    model, tokenizer, _ = load_memory("slow")
    # Probes worded with templates and paraphrases that training never used.
    probes = validation_pairs(UserMemory("slow").notes()[0])
    questions, labels = [p.question for p in probes], [p.label for p in probes]
    memory = YesNoScorer(model, tokenizer).log_odds(questions)
    with model.disable_adapter():
        none = YesNoScorer(model, tokenizer).log_odds(questions)
    assert right_leaning(memory, labels) > right_leaning(none, labels)
    accuracy = {
        name: sum((s > 0) == (label == "yes") for s, label in zip(scores, labels)) / len(labels)
        for name, scores in (("memory", memory), ("none", none))
    }
    assert accuracy["memory"] > accuracy["none"]

    # Recall: asked only the conversation's date, the memory writes back its topics; the base model cannot.
    notes = UserMemory("slow").notes()
    config = RecallConfig(branches=2, max_new_tokens=32)
    recalled = recollect(model, tokenizer, recall_cues(notes), config)[0].lower()
    with model.disable_adapter():
        base = recollect(model, tokenizer, recall_cues(notes), config)[0].lower()
    topic_words = content_words(" ".join(t.name for t in notes[0].topics))
    assert sum(w in recalled for w in topic_words) > sum(w in base for w in topic_words)


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
