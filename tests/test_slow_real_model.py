"""On the real embedded model: learning one conversation makes its probes come out better."""

import pytest
from conftest import DEMO

from paramem.answer import load_memory
from paramem.augment.teachers import ExtractiveTeacher
from paramem.evaluate.probes import load_probes
from paramem.evaluate.run import evaluate_yes_no
from paramem.remember import RememberConfig, remember
from paramem.train import TrainConfig


def margin(result):
    """Mean log-odds toward the right answer, after the prior: > 0 leans right, < 0 leans wrong."""
    prior = result.thresholds["prior"]
    return sum((p["log_odds"] - prior) * (1 if p["answer"] == "yes" else -1)
               for p in result.predictions) / len(result.predictions)


@pytest.mark.slow
def test_memory_answers_its_conversations_probes_better_than_no_memory(demo_conversations):
    garden = demo_conversations[0]
    remember("slow", [garden], ExtractiveTeacher(), RememberConfig(train=TrainConfig(epochs=6)))
    model, tokenizer, _ = load_memory("slow")
    probes = [p for p in load_probes(DEMO / "probes.jsonl") if p.conversation == garden.id]
    memory, none = evaluate_yes_no(model, tokenizer, probes, ["memory", "none"])
    assert margin(memory) > margin(none)
