import pytest
import torch
from peft import PeftModel

from paramem.config import MiLPTrainConfig, MultiLoraConfig
from paramem.data.conversations import Conversation, Message
from paramem.errors import InputError
from paramem.memory.batching import batches, training_loss
from paramem.memory.milp.model import (
    attach,
    history_examples,
    learn,
    load,
    lora_config,
    mean_loss,
    parameter_count,
    placement,
    replies,
    reply,
    reply_example,
    reply_examples,
    reply_prompt_ids,
    save,
)
from paramem.model.loading import tiny_model

FAST = MiLPTrainConfig(memory_epochs=2, instruction_epochs=3, batch_size=2, max_new_tokens=8, learning_rate=5e-3)


def chat(i: int, turns: int = 6) -> Conversation:
    messages = tuple(
        Message("user" if j % 2 == 0 else "assistant", f"turn {j} of talk {i}: the bees swarmed at noon")
        for j in range(turns)
    )
    return Conversation(f"talk-{i}", messages)


@pytest.mark.parametrize(
    ("loras", "layers", "depth", "expected"),
    [
        (3, [0, 1], 2, {0: 1, 1: 2}),  # n >= m: every chosen layer, the later ones one more
        (2, None, 8, {3: 1, 7: 1}),  # n < m: spaced evenly over the chosen layers
        (4, [2, 5, 6, 9], 12, {2: 1, 5: 1, 6: 1, 9: 1}),
        (0, None, 4, {}),  # no memory
    ],
)
def test_placement_spreads_n_loras_over_the_mask(loras, layers, depth, expected):
    held = placement(MultiLoraConfig(loras=loras, layers=layers, rank=8), depth)
    assert held == expected and sum(held.values()) == loras


def test_k_loras_on_a_layer_are_one_lora_of_rank_k_r_with_each_ones_scale():
    config = lora_config(MultiLoraConfig(loras=3, layers=[0, 1], rank=4, scale=2.0), depth=2)
    assert config.layers_to_transform == [0, 1] and sorted(config.target_modules) == [
        "down_proj",
        "gate_proj",
        "up_proj",
    ]
    model = attach(tiny_model()[0], MultiLoraConfig(loras=3, layers=[0, 1], rank=4, scale=2.0))
    layers = model.get_base_model().model.layers
    assert layers[0].mlp.up_proj.r["default"] == 4 and layers[1].mlp.up_proj.r["default"] == 8
    assert layers[0].mlp.up_proj.scaling["default"] == layers[1].mlp.down_proj.scaling["default"] == 2.0


def test_only_the_chosen_layers_feed_forward_projections_learn():
    model, tokenizer = tiny_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    memorised = attach(model, MultiLoraConfig(loras=2, layers=[1], rank=4))
    trainable = [n for n, p in memorised.named_parameters() if p.requires_grad]
    assert trainable and all(".layers.1.mlp." in n and "lora_" in n for n in trainable)
    assert len(trainable) == 6  # A and B of gate, up and down
    start = {n: p.detach().clone() for n, p in memorised.named_parameters() if p.requires_grad}
    examples = history_examples(tokenizer, [chat(1)], FAST)
    optimizer = torch.optim.SGD([p for p in memorised.parameters() if p.requires_grad], lr=1.0)
    for _ in range(2):  # B starts at zero: the second step moves the layer's output
        for batch in batches(examples, 2, tokenizer.pad_token_id, 512, __import__("random").Random(0)):
            training_loss(memorised, batch).backward()
            optimizer.step()
            optimizer.zero_grad()
    assert {n for n, p in memorised.named_parameters() if "lora_" in n} == set(trainable)  # no LoRA elsewhere
    assert all(not torch.equal(p, start[n]) for n, p in memorised.named_parameters() if n in start)
    for name, param in memorised.get_base_model().named_parameters():
        if "lora_" not in name:  # the base weights never move
            assert torch.equal(param, before[name.replace(".base_layer", "")])


def test_parameter_count_is_n_times_one_lora():
    model, _ = tiny_model()
    one = parameter_count(MultiLoraConfig(loras=1, rank=4), model)
    memorised = attach(model, MultiLoraConfig(loras=3, layers=[0, 1], rank=4))
    counted = sum(p.numel() for p in memorised.parameters() if p.requires_grad)
    assert counted == 3 * one == parameter_count(MultiLoraConfig(loras=3, rank=4), model)


@pytest.mark.parametrize(
    ("make", "named"),
    [
        (lambda: MultiLoraConfig(rank=0), "rank"),
        (lambda: MultiLoraConfig(layers=[]), "layers"),
        (lambda: MultiLoraConfig(loras=-1), "loras"),
        (lambda: placement(MultiLoraConfig(layers=[0, 2]), depth=2), "depth 2"),
    ],
)
def test_invalid_memory_configurations_are_bad_input(make, named):
    with pytest.raises(InputError, match=named):
        make()


def test_reply_example_trains_only_the_reply_and_fits_max_length():
    _, tokenizer = tiny_model()
    config = MiLPTrainConfig(max_length=96, max_new_tokens=16, context_turns=6)
    context = list(chat(1, 5).messages)
    example = reply_example(tokenizer, context, "they swarmed", config)
    trained = [i for i, w in zip(example.input_ids, example.weights) if w > 0]
    assert tokenizer.decode(trained[:-1]) == "they swarmed" and trained[-1] == tokenizer.eos_token_id
    assert len(example.input_ids) <= config.max_length + len(trained)
    # the dialogue so far is cut from the left: the last turn is still there
    prompt = tokenizer.decode([i for i, w in zip(example.input_ids, example.weights) if w == 0])
    assert "turn 4 of talk 1" in prompt and "turn 0 of talk 1" not in prompt


def test_learn_lowers_the_loss_of_the_histories_replies_and_round_trips_through_peft(tmp_path):
    model, tokenizer = tiny_model()
    history = [chat(1), chat(2)]
    examples = reply_examples(tokenizer, history, FAST)
    assert len(examples) == 6  # three assistant turns per conversation
    before = mean_loss(model, tokenizer, examples)
    memorised = learn(model, tokenizer, history, MultiLoraConfig(loras=2, rank=8), FAST)
    after = mean_loss(memorised, tokenizer, examples)
    assert after < before - 0.5
    save(memorised, tmp_path / "milp")
    loaded = load(tiny_model()[0], tmp_path / "milp")
    assert isinstance(loaded, PeftModel)
    context = list(history[0].messages[:3])
    assert reply(loaded, tokenizer, context, FAST) == reply(memorised, tokenizer, context, FAST)


def test_learning_leaves_the_shared_base_model_reading_as_it_did():
    """One loaded base model serves every method of a replies run: after a memory is learned on it and
    unloaded, it computes what it computed before, with the same attention kernel."""
    model, tokenizer = tiny_model()
    model.set_attn_implementation("sdpa")
    model.eval()
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.inference_mode():
        before = model(ids).logits
    learned = learn(model, tokenizer, [chat(1)], MultiLoraConfig(loras=2, rank=8), FAST)
    assert learned.config._attn_implementation == "sdpa"  # its replies read with the same kernel too
    learned.unload()
    model.eval()
    assert model.config._attn_implementation == "sdpa"
    with torch.inference_mode():
        assert torch.equal(model(ids).logits, before)


def test_no_loras_is_the_base_model(tmp_path):
    model, tokenizer = tiny_model()
    learned = learn(model, tokenizer, [chat(1)], MultiLoraConfig(loras=0), FAST)
    assert learned is model
    save(learned, tmp_path / "none")
    assert load(model, tmp_path / "none") is model


def test_the_repetition_penalty_reaches_the_reply():
    """Greedy decoding under transformers' penalty on every token already seen (positive logits
    divided by it, negative ones multiplied), done here by hand, gives the reply's tokens."""
    model, tokenizer = tiny_model()
    context = list(chat(1).messages[:3])
    prompt = reply_prompt_ids(tokenizer, context, FAST)
    expected = {}
    for penalty in (1.0, 50.0):
        ids = list(prompt)
        with torch.no_grad():
            for _ in range(4):
                logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
                seen = torch.tensor(sorted(set(ids)))
                logits[seen] = torch.where(logits[seen] > 0, logits[seen] / penalty, logits[seen] * penalty)
                ids.append(int(logits.argmax()))
        expected[penalty] = tokenizer.decode(ids[len(prompt) :], skip_special_tokens=True).strip()
        config = MiLPTrainConfig(max_new_tokens=4, repetition_penalty=penalty)
        assert reply(model, tokenizer, context, config) == expected[penalty]
    assert expected[1.0] != expected[50.0]  # the random model repeats itself unless kept from it


def test_replies_in_one_batch_are_the_replies_made_one_at_a_time():
    """Left padding is masked out and, being the row's own first token, leaves the repetition penalty
    as it was: a batch of dialogues of different lengths decodes as each would alone."""
    model, tokenizer = tiny_model()
    contexts = [list(chat(i).messages[:turns]) for i, turns in ((1, 1), (2, 5), (3, 3))]
    assert len({len(reply_prompt_ids(tokenizer, c, FAST)) for c in contexts}) == 3
    config = MiLPTrainConfig(max_new_tokens=6, repetition_penalty=1.3)
    one_by_one = [reply(model, tokenizer, c, config) for c in contexts]
    assert replies(model, tokenizer, contexts, config) == one_by_one
    assert len(set(one_by_one)) > 1
