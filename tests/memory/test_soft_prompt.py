"""UeLP's user embedding: a soft prompt learned from a user's history (memory/soft_prompt.py)."""

import pytest
from conftest import FIXTURES

from paramem.config import MiLPTrainConfig
from paramem.evaluate.episodes import msc_episodes
from paramem.memory.soft_prompt import learn_soft_prompt, soft_prompt_loss
from paramem.model.loading import tiny_model

MSC = FIXTURES / "msc"
TINY_TRAIN = MiLPTrainConfig(memory_epochs=1, instruction_epochs=1, max_new_tokens=4)


def episodes():
    return msc_episodes(
        MSC / "msc_dialogue" / "session_3" / "test.txt", MSC / "msc_personasummary" / "session_4" / "test.txt", dev=1
    )


def test_user_embedding_learns_a_soft_prompt_and_leaves_the_base_model_alone():
    model, tokenizer = tiny_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    prompted = learn_soft_prompt(model, tokenizer, list(episodes()[0].history), TINY_TRAIN, 4, 3e-2)
    embedding = prompted.prompt_encoder["default"].embedding.weight
    assert embedding.shape[0] == 4
    assert all(p.equal(before[n]) for n, p in prompted.get_base_model().named_parameters())


def test_the_soft_prompt_loss_is_peft_prompt_tuning_loss_without_the_full_logits():
    import random

    from peft import PromptTuningConfig, get_peft_model

    from paramem.memory.batching import batches, weighted_cross_entropy
    from paramem.memory.milp.model import reply_examples

    model, tokenizer = tiny_model()
    prompted = get_peft_model(model, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3))
    examples = reply_examples(tokenizer, list(episodes()[0].history), TINY_TRAIN)
    batch = batches(examples, 4, tokenizer.pad_token_id, 384, random.Random(0))[0]
    assert (batch["attention_mask"] == 0).any()  # padding included
    logits = prompted(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    expected = weighted_cross_entropy(logits[:, 3:], batch["input_ids"], batch["weights"])
    assert soft_prompt_loss(prompted, batch).item() == pytest.approx(expected.item(), rel=1e-5)
