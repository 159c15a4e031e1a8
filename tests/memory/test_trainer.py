import random

import pytest
import torch

from paramem.augment.pairs import PairConfig
from paramem.config import TrainConfig
from paramem.memory.batching import batches, training_loss, weighted_cross_entropy
from paramem.memory.lora import attach_lora
from paramem.model.loading import tiny_model
from paramem.model.prompts import encode_example


def test_weighted_token_contributes_lambda_times_the_gradient():
    torch.manual_seed(0)
    logits = torch.randn(1, 4, 11, requires_grad=True)
    ids = torch.tensor([[1, 2, 3, 4]])
    # Token 1 has weight 1, token 2 weight 10 (lambda), token 3 is padding (weight 0).
    weights = torch.tensor([[0.0, 1.0, 10.0, 0.0]])
    weighted_cross_entropy(logits, ids, weights).backward()
    grad = logits.grad[0]
    one = torch.nn.functional.cross_entropy(logits[0, 0:1], ids[0, 1:2])
    ten = torch.nn.functional.cross_entropy(logits[0, 1:2], ids[0, 2:3])
    (g_one,) = torch.autograd.grad(one, logits, retain_graph=True)
    (g_ten,) = torch.autograd.grad(ten, logits)
    # Normalised by the 2 trained tokens: grad = (1 * g_one + 10 * g_ten) / 2.
    torch.testing.assert_close(grad, ((g_one + 10 * g_ten) / 2)[0])
    assert torch.count_nonzero(grad[2]) == 0 and torch.count_nonzero(grad[3]) == 0


def test_one_training_step_lowers_the_loss_on_the_pair_it_learned():
    model, tokenizer = tiny_model()
    config = TrainConfig(learning_rate=1e-2)
    model = attach_lora(model, config)
    [batch] = batches(
        [encode_example(tokenizer, "Did we talk about tea?", "Yes, about green tea.", 10.0)],
        8,
        tokenizer.pad_token_id,
        256,
        random.Random(0),
    )
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.learning_rate)
    model.train()
    losses = []
    for _ in range(3):
        loss = training_loss(model, batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[2] < losses[1] < losses[0]


def test_lambda_scales_exactly():
    logits = torch.randn(2, 5, 7)
    ids = torch.randint(0, 7, (2, 5))
    ones = torch.ones(2, 5)
    assert torch.isclose(weighted_cross_entropy(logits, ids, 10 * ones), 10 * weighted_cross_entropy(logits, ids, ones))


def test_example_weights_mark_question_and_answer():
    _, tokenizer = tiny_model()
    example = encode_example(tokenizer, "Q?", "A.", qa_weight=10.0, template_weight=1.0)
    text = tokenizer.decode([i for i, w in zip(example.input_ids, example.weights) if w == 10.0])
    assert text == "Q?A."
    assert 1.0 in example.weights


def test_batches_pad_with_zero_weight():
    _, tokenizer = tiny_model()
    examples = [
        encode_example(tokenizer, "short?", "Yes.", 10.0),
        encode_example(tokenizer, "a longer one?", "No.", 10.0),
    ]
    [batch] = batches(examples, 8, tokenizer.pad_token_id, 256, random.Random(0))
    for row in range(2):
        padding = batch["attention_mask"][row] == 0
        assert torch.all(batch["weights"][row][padding] == 0)
    assert int(batch["attention_mask"].sum()) == sum(len(e.input_ids) for e in examples)


def test_lora_defaults_are_plums():
    config = TrainConfig()
    assert (config.lora_rank, config.lora_alpha, config.qa_weight, config.epochs) == (16, 64, 10.0, 10)
    model, _ = tiny_model()
    peft_model = attach_lora(model, config)
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert any("mlp" in n for n in trainable) and any("self_attn" in n for n in trainable)


def test_training_loss_equals_weighted_cross_entropy_on_full_logits():
    """The head-only-where-trained loss is the same number as PLUM's loss on all logits."""
    model, tokenizer = tiny_model()
    examples = [
        encode_example(tokenizer, "Did we talk about tea?", "Yes.", 10.0),
        encode_example(tokenizer, "Q?", "No.", 10.0, template_weight=0.0),
    ]
    [batch] = batches(examples, 8, tokenizer.pad_token_id, 256, random.Random(0))
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    expected = weighted_cross_entropy(logits, batch["input_ids"], batch["weights"])
    torch.testing.assert_close(training_loss(model, batch), expected)


def test_lora_on_top_layers_leaves_lower_layers_without_gradient():
    model, tokenizer = tiny_model()
    peft_model = attach_lora(model, TrainConfig(layers=[1]))
    [batch] = batches([encode_example(tokenizer, "Q?", "A.", 10.0)], 8, tokenizer.pad_token_id, 256, random.Random(0))
    training_loss(peft_model, batch).backward()
    trained = {n for n, p in peft_model.named_parameters() if p.grad is not None}
    assert trained and all(".layers.1." in n for n in trained)


def _trainer_scoring(heldout_scores, **config):
    from paramem.memory.trainer import SequentialTrainer

    model, tokenizer = tiny_model()
    trainer = SequentialTrainer(attach_lora(model, TrainConfig(**config)), tokenizer, TrainConfig(**config))
    scores = iter(heldout_scores)
    trainer.heldout_accuracy = lambda pairs: next(scores)  # the stopping rule alone, not the scorer
    return trainer


def _notes():
    from paramem.data.notes import Fact, Notes, Topic

    return Notes(
        "c1",
        "2 March 2026",
        topics=[Topic("a trip to Kyoto", ["a holiday in Kyoto", "Japan"])],
        facts=[Fact("The user flies in April.", ["In April the user flies."])],
        negatives=[Topic("a trip to Seoul", ["a holiday in Seoul", "Korea"])],
        false_facts=[Fact("The user flies in May.")],
    )


def test_learning_stops_once_held_out_pairs_are_all_answered():
    result = _trainer_scoring([0.5, 1.0, 1.0, 1.0], epochs=4, min_epochs=1).learn(_notes(), [])
    assert (result.epochs_run, result.epochs, result.heldout_accuracy) == (2, 2, 1.0)


def test_learning_stops_after_patience_epochs_without_improvement_and_keeps_the_best():
    result = _trainer_scoring([0.5, 0.75, 0.5, 0.5, 0.5, 0.9], epochs=6, patience=3).learn(_notes(), [])
    assert (result.epochs_run, result.epochs, result.heldout_accuracy) == (5, 2, 0.75)


def test_the_learning_rate_with_the_best_held_out_accuracy_is_kept_and_each_starts_from_the_same_adapter():
    for scores, kept_rate in (([0.75, 0.75, 0.5, 0.5], 1e-3), ([0.5, 0.5, 0.75, 0.75], 1e-2)):
        trainer = _trainer_scoring(scores, epochs=2, min_epochs=2, learning_rates=[1e-3, 1e-2])
        result = trainer.learn(_notes(), [])
        assert result.learning_rate == kept_rate and result.heldout_accuracy == 0.75
        # The same conversation learned at the kept rate alone, from the same fresh adapter
        alone = _trainer_scoring([0.75, 0.75], epochs=2, min_epochs=2, learning_rate=kept_rate)
        alone.learn(_notes(), [])
        kept, expected = trainer._lora_state(), alone._lora_state()
        assert all(torch.equal(kept[name], expected[name]) for name in expected)


def test_every_epoch_replays_each_earlier_conversations_recall_cue():
    import random
    from dataclasses import replace

    from paramem.augment.pairs import recall_question

    trainer = _trainer_scoring([], replay_share=0.3)
    earlier = [replace(_notes(), conversation_id=f"old{i}", date=f"{i} January 2026") for i in range(1, 4)]
    for epoch in (1, 2):
        examples, own = trainer._epoch_examples(_notes(), earlier, epoch, random.Random(epoch))
        texts = [trainer.tokenizer.decode(e.input_ids) for e in examples[own:]]
        assert all(sum(recall_question(old) in t for t in texts) == 1 for old in earlier)


@pytest.mark.parametrize(
    "make",
    [
        lambda: TrainConfig(epochs=0),
        lambda: TrainConfig(replay_share=1.0),
        lambda: TrainConfig(qa_weight=0),
        lambda: TrainConfig(learning_rates=[1e-3, 0]),
        lambda: TrainConfig(batch_size=0),
        lambda: PairConfig(negative_ratio=-0.5),
        lambda: PairConfig(max_pairs=0),
    ],
)
def test_configs_refuse_bad_values_for_the_python_api_too(make):
    with pytest.raises(ValueError, match="must be"):  # InputError, a ValueError: the CLI prints it, exits 2
        make()


def test_replay_is_bounded_and_every_earlier_cue_comes_back_in_rotation():
    import random
    from dataclasses import replace

    from paramem.augment.pairs import recall_question
    from paramem.memory.trainer import rotation

    assert rotation(3, 8, 5) == [0, 1, 2]
    turns = [rotation(30, 8, turn) for turn in range(4)]
    assert all(len(t) == 8 for t in turns) and set().union(*map(set, turns)) == set(range(30))

    trainer = _trainer_scoring([], replay_share=0.3, replayed_cues=4)
    earlier = [replace(_notes(), conversation_id=f"old{i}", date=f"{i} January 2026") for i in range(1, 31)]
    sizes, cued = [], set()
    for epoch in (1, 2, 3, 4, 5, 6, 7, 8):
        examples, own = trainer._epoch_examples(_notes(), earlier, epoch, random.Random(epoch))
        texts = [trainer.tokenizer.decode(e.input_ids) for e in examples[own:]]
        cued |= {old.conversation_id for old in earlier if any(recall_question(old) in t for t in texts)}
        sizes.append(len(examples))
    few, _ = trainer._epoch_examples(_notes(), earlier[:3], 1, random.Random(1))
    assert max(sizes) <= len(few) + 1  # 30 earlier conversations cost what 3 do
    assert cued == {old.conversation_id for old in earlier}  # yet every cue is replayed within 8 epochs


def test_a_fresh_adapter_starts_the_same_whatever_ran_before():
    base_a, base_b = tiny_model()[0], tiny_model()[0]  # (tiny_model seeds torch itself)
    first = attach_lora(base_a, TrainConfig())
    torch.rand(100)  # other work moves the global random state
    second = attach_lora(base_b, TrainConfig())
    for (name, a), (_, b) in zip(first.named_parameters(), second.named_parameters()):
        assert torch.equal(a, b), name
