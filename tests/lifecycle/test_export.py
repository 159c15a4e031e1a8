"""export.py: a user's memory as a PEFT folder or a merged model that other tools load as they are."""

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from paramem.augment.teachers.extractive import ExtractiveTeacher
from paramem.config import RememberConfig, TrainConfig
from paramem.errors import InputError
from paramem.lifecycle.export import export
from paramem.lifecycle.remember import remember
from paramem.model.loading import load_model
from paramem.model.scoring import YesNoScorer
from paramem.read.loading import load_memory

QUESTIONS = ["Did we talk about tomatoes?", "Did we discuss the marathon?"]
SEQUENTIAL = RememberConfig(base_model="tiny", train=TrainConfig(epochs=1, min_epochs=1))
CARTRIDGE = RememberConfig(
    base_model="tiny",
    train=TrainConfig(
        objective="distill", distill_checks=0, form="cartridge", epochs=1, distill_queries=2, distill_answer_tokens=3
    ),
)


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PARAMEM_CACHE", str(tmp_path / "cache"))


def test_both_formats_answer_exactly_as_the_memory_does(demo_conversations, tmp_path):
    remember("e", demo_conversations[:2], ExtractiveTeacher(), SEQUENTIAL)
    model, tokenizer, _ = load_memory("e")
    expected = YesNoScorer(model, tokenizer).log_odds(QUESTIONS)

    folder = export("e", tmp_path / "peft")
    assert (folder / "adapter_config.json").exists() and not (folder / "recall.json").exists()
    base, _ = load_model("tiny")
    assert YesNoScorer(PeftModel.from_pretrained(base, str(folder)), tokenizer).log_odds(QUESTIONS) == expected

    merged = AutoModelForCausalLM.from_pretrained(export("e", tmp_path / "merged", "merged"), dtype=torch.float32)
    assert YesNoScorer(merged, tokenizer).log_odds(QUESTIONS) == pytest.approx(expected, abs=1e-4)


def test_what_cannot_be_exported_is_one_clear_error(demo_conversations, tmp_path):
    remember("e", demo_conversations[:1], ExtractiveTeacher(), SEQUENTIAL)
    with pytest.raises(InputError, match="unknown export format 'gguf'"):
        export("e", tmp_path / "x", "gguf")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "something").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        export("e", tmp_path / "full")
    assert (tmp_path / "full" / "something").read_text() == "mine"
    remember("c", demo_conversations[:1], ExtractiveTeacher(), CARTRIDGE)
    with pytest.raises(InputError, match="cartridge memory"):
        export("c", tmp_path / "c")
    with pytest.raises(InputError):
        export("nobody", tmp_path / "n")
