import pytest

from paramem.augment.pairs import heldout_pairs
from paramem.augment.teachers.extractive import ExtractiveTeacher
from paramem.config import RememberConfig, TrainConfig
from paramem.errors import InputError
from paramem.lifecycle.remember import remember
from paramem.model.scoring import LogOddsReader
from paramem.read.loading import load_memory
from paramem.read.readers import RecallReader, ask, main_rule, memory_reader, rule_thresholds
from paramem.read.recall import RecallConfig


@pytest.fixture
def learned(demo_conversations):
    remember(
        "r",
        demo_conversations[:2],
        ExtractiveTeacher(),
        RememberConfig(base_model="tiny", train=TrainConfig(epochs=1, min_epochs=1)),
    )
    return load_memory("r")


def test_ask_reads_by_log_odds_with_a_threshold_from_the_held_out_pairs_only(learned):
    model, tokenizer, memory = learned
    question = "Did we talk about tomatoes?"
    alone = ask(model, tokenizer, memory, [question], "log-odds", "heldout")[0]
    among = ask(
        model, tokenizer, memory, [question, "Did we discuss a job?", "Have we spoken of Kyoto?"], "log-odds", "heldout"
    )[0]
    assert alone.margin == pytest.approx(among.margin, abs=1e-4)  # other questions move no threshold
    reader = LogOddsReader(model, tokenizer)
    threshold = rule_thresholds(reader.score, heldout_pairs(memory.notes()))["heldout"]
    assert alone.margin == pytest.approx(reader.score([question])[0] - threshold, abs=1e-4)
    assert alone.answer == ("yes" if alone.margin > 0 else "no") and alone.evidence is None


def test_ask_by_recall_names_the_closest_recalled_sentence(learned):
    model, tokenizer, memory = learned
    [answer] = ask(model, tokenizer, memory, ["Did we talk about tomatoes?"])  # recall, balanced rule
    reader = memory_reader(model, tokenizer, memory, "recall")
    assert isinstance(reader, RecallReader) and answer.evidence in reader.matcher.sentences
    with pytest.raises(InputError, match="unknown decision rule"):
        ask(model, tokenizer, memory, ["Did we?"], "recall", "vibes")


def test_the_trainer_reads_its_held_out_pairs_with_the_reader_it_is_given(demo_conversations):
    from paramem.memory.lora import attach_lora
    from paramem.memory.trainer import SequentialTrainer
    from paramem.model.loading import tiny_model

    class AlwaysYes:
        def score(self, questions):
            return [1.0] * len(questions)

        def prompt_tokens(self, questions):
            return 0

    model, tokenizer = tiny_model()
    config = TrainConfig(epochs=1, min_epochs=1)
    trainer = SequentialTrainer(attach_lora(model, config), tokenizer, config, reader=AlwaysYes)
    notes = ExtractiveTeacher().notes(demo_conversations[0])
    assert trainer.learn(notes, []).heldout_accuracy == 0.5  # held-out pairs are half yes


def test_the_epoch_choice_reads_the_separation_not_the_scale(demo_conversations):
    """Every score above 0 but the yes pairs scored higher: at threshold 0 that read 0.5, the
    balanced rule reads 1.0."""
    from paramem.augment.pairs import validation_pairs
    from paramem.memory.lora import attach_lora
    from paramem.memory.trainer import SequentialTrainer
    from paramem.model.loading import tiny_model

    notes = ExtractiveTeacher().notes(demo_conversations[0])
    yes = {p.question for p in validation_pairs(notes) if p.label == "yes"}

    class BiasedButRight:
        def score(self, questions):
            return [5.0 if q in yes else 4.0 for q in questions]

        def prompt_tokens(self, questions):
            return 0

    model, tokenizer = tiny_model()
    config = TrainConfig(epochs=1, min_epochs=1)
    trainer = SequentialTrainer(attach_lora(model, config), tokenizer, config, reader=BiasedButRight)
    assert trainer.learn(notes, []).heldout_accuracy == 1.0


def test_recall_reader_scores_similarity_above_the_threshold():
    reader = RecallReader(["We talked about tomato seedlings on the balcony."], RecallConfig().threshold)
    near, far = reader.score(["Did we talk about tomato seedlings?", "Did we discuss tax returns?"])
    assert near > 0 > far and reader.prompt_tokens(["x"]) == 0


def test_the_default_rule_follows_the_readout_and_the_memory_form():
    assert main_rule("log-odds") == main_rule("log-odds", "sequential") == "prior"
    assert main_rule("recall") == main_rule("recall", "sequential") == "balanced"
    assert main_rule("log-odds", "cartridge") == "balanced"  # chosen on development samples only
