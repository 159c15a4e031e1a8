import json

import pytest
from test_milp import chat
from typer.testing import CliRunner

from paramem.cli.main import app
from paramem.config import MiLPTrainConfig, MultiLoraConfig
from paramem.errors import InputError
from paramem.lifecycle.personalise import DevUser, MemoryObjective
from paramem.memory.milp.search import (
    Objectives,
    SearchConfig,
    SearchSpace,
    Trial,
    choose,
    describe,
    hypervolume,
    pareto_front,
    read_trials,
    search,
)
from paramem.model.loading import tiny_model


def trial(number, loss, rouge_l, kind="random"):
    return Trial(number, kind, {"loras": number, "layers": None, "rank": 8, "scale": 2.0}, loss, rouge_l, 0.0)


def test_encoding_round_trips_and_never_gives_an_empty_mask():
    import random

    space = SearchSpace(depth=12, block_size=4, ranks=[8, 16, 32])
    rng = random.Random(0)
    for _ in range(200):
        config = space.random_config(rng)
        assert (config.layers or config.loras == 0) and 0 <= config.loras <= 12 and config.rank in (8, 16, 32)
        assert space.decode(space.encode(config)) == config
    assert space.decode([0.5, 0.5, 0.1, 0.2, 0.3]).layers == [8, 9, 10, 11]  # all off: the likeliest block


def test_every_configuration_without_loras_is_the_one_base_model():
    space = SearchSpace(depth=12, block_size=4, ranks=[8, 16, 32])
    assert space.decode([0.0, 0.9, 1.0, 0.0, 0.0]) == space.decode([0.01, 0.1, 0.0, 1.0, 1.0]) == space.no_memory
    # so a search never spends a trial on the base model again (BO once proposed n=0 with another mask)


def test_unsearched_factors_stay_fixed():
    space = SearchSpace(depth=4, factors=["rank"], fixed=MultiLoraConfig(loras=3, layers=[1, 2], rank=16))
    assert space.dimensions == 1
    config = space.decode([0.99])
    assert (config.loras, config.layers, config.rank) == (3, [1, 2], 96)


def test_a_memory_is_described_by_its_factors_and_where_its_loras_sit():
    assert describe(MultiLoraConfig(loras=1, layers=[0, 1, 2, 3, 12, 13, 14, 15], rank=8), 24) == (
        "n=1 r=8 mask 0-3,12-15 (1 LoRA on 1 layer)"
    )
    assert (
        describe(MultiLoraConfig(loras=4, layers=[2, 3, 7], rank=16), 8) == "n=4 r=16 mask 2-3,7 (4 LoRAs on 3 layers)"
    )


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"ranks": [0, 8]}, "ranks"),
        ({"candidate_layers": []}, "candidate_layers"),
        ({"candidate_layers": [0, 24]}, "depth is 24"),
        ({"factors": ["heads"]}, "factors"),
        ({"block_size": 0}, "block_size"),
    ],
)
def test_invalid_search_space_is_refused_before_any_trial(options, named, tmp_path):
    evaluated = []
    with pytest.raises(InputError, match=named):
        search(SearchSpace(depth=24, **options), evaluated.append, tmp_path)
    assert not evaluated


def test_pareto_front_hypervolume_and_choice():
    trials = [trial(0, 3.0, 0.1, "base"), trial(1, 2.0, 0.2), trial(2, 2.5, 0.3), trial(3, 2.6, 0.25)]
    assert [t.number for t in pareto_front(trials)] == [1, 2]  # 3 is beaten by 2 on both
    # reference (-3.0, 0): the union of rectangles 1.0 x 0.2 and 0.5 x 0.3 is 0.2 + 0.5 x 0.1
    assert hypervolume(trials) == pytest.approx(0.25)
    assert choose(trials).number == 2  # the front's best ROUGE-L


def test_search_runs_base_random_then_bayesian_trials_and_writes_the_front(tmp_path):
    space = SearchSpace(depth=2, block_size=1, ranks=[2, 4])

    def evaluate(memory):  # a smooth function of the configuration: more LoRAs, lower loss
        return Objectives(loss=3.0 - 0.3 * memory.loras, rouge_l=0.05 * memory.rank + 0.01 * len(memory.layers or []))

    trials = search(space, evaluate, tmp_path, SearchConfig(initial_trials=3, bo_trials=1))
    assert [t.kind for t in trials] == ["base", "random", "random", "random", "bo"]
    assert trials[0].config["loras"] == 0
    assert len((tmp_path / "trials.jsonl").read_text().splitlines()) == 5
    volumes = [t.hypervolume for t in trials]
    assert volumes == sorted(volumes) and volumes[-1] > 0
    summary = json.loads((tmp_path / "pareto.json").read_text())
    assert summary["chosen"]["number"] == choose(trials).number and len(summary["hypervolume"]) == 5
    assert (tmp_path / "pareto.png").stat().st_size > 1000
    tried = [json.dumps(space.encode(t.memory)) for t in trials[1:]]
    assert tried[-1] not in tried[:-1]  # BO proposes an untried configuration


def test_no_trial_repeats_another_and_a_small_space_ends_the_search_early(tmp_path):
    # the rank alone: five ranks, n fixed at 8; the base model (n = 0) does not make r = 8 tried
    space = SearchSpace(depth=2, factors=["rank"])
    evaluated = []

    def evaluate(memory):
        evaluated.append(memory)
        return Objectives(loss=3.0 - 0.001 * memory.rank, rouge_l=0.1 + 0.001 * memory.loras * memory.rank)

    trials = search(space, evaluate, tmp_path, SearchConfig(initial_trials=4, bo_trials=4))
    ranks = [t.config["rank"] for t in trials[1:]]
    assert sorted(ranks) == space.ranks  # every rank once, then nothing left to try
    assert len(trials) == 1 + len(space.ranks) and len(evaluated) == len(trials)
    assert [t.kind for t in trials][-1] == "bo"
    assert search(space, evaluate, tmp_path, SearchConfig(initial_trials=4, bo_trials=4)) == trials  # resumes


def test_interrupted_search_resumes_without_redoing_trials(tmp_path):
    space = SearchSpace(depth=2, block_size=1, ranks=[2, 4])
    seen = []

    def evaluate(memory):
        if len(seen) == 2:
            raise KeyboardInterrupt
        seen.append(memory)
        return Objectives(loss=3.0 - 0.1 * memory.loras, rouge_l=0.1 * memory.rank)

    config = SearchConfig(initial_trials=3, bo_trials=0)
    with pytest.raises(KeyboardInterrupt):
        search(space, evaluate, tmp_path, config)
    with open(tmp_path / "trials.jsonl", "a") as file:
        file.write('{"number": 2, "kind": "ran')  # a line cut short by the interruption
    assert [t.number for t in read_trials(tmp_path / "trials.jsonl")] == [0, 1]
    seen.clear()
    resumed = []
    trials = search(
        space, lambda m: resumed.append(m) or Objectives(3.0 - 0.1 * m.loras, 0.1 * m.rank), tmp_path, config
    )
    assert [t.number for t in trials] == [0, 1, 2, 3] and len(resumed) == 2
    # the random configurations are drawn the same on every run: the resumed ones are the ones planned
    fresh = []
    search(space, lambda m: fresh.append(m) or Objectives(3.0, 0.1), tmp_path / "fresh", config)
    assert resumed == fresh[2:]


def test_memory_objective_learns_and_scores_each_user_then_restores_the_base_model():
    model, tokenizer = tiny_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    users = [DevUser("a", [chat(1), chat(2)], chat(3)), DevUser("b", [chat(4)], chat(5))]
    config = MiLPTrainConfig(memory_epochs=1, instruction_epochs=2, batch_size=2, max_new_tokens=4, learning_rate=5e-3)
    objective = MemoryObjective(model, tokenizer, users, config, replies=1)
    base = objective(MultiLoraConfig(loras=0))
    learned = objective(MultiLoraConfig(loras=2, rank=8))
    assert learned.loss < base.loss  # the replies of a held-out talk in the same shape are likelier
    assert 0.0 <= learned.rouge_l <= 1.0
    assert {n for n, _ in model.named_parameters()} == set(before)  # no LoRA left behind
    assert all(p.equal(before[n]) for n, p in model.named_parameters())


def test_cli_search_stores_the_chosen_memory_and_chat_uses_it(tmp_path):
    from conftest import FIXTURES

    from paramem.store.user import UserMemory

    runner = CliRunner()
    args = ["search", str(FIXTURES / "msc.txt"), "-u", "bob", "--base-model", "tiny", "--initial", "2", "--bo", "0"]
    result = runner.invoke(app, [*args, "--ranks", "2,4", "--block-size", "1", "--replies", "1"])
    assert result.exit_code == 0, result.output
    record = UserMemory("bob").milp.record()
    assert record["chosen_trial"] in (0, 1, 2) and (UserMemory("bob").milp.root / "search" / "pareto.png").exists()
    chatted = runner.invoke(app, ["chat", "-u", "bob", "--memory", "milp", "--max-new-tokens", "3"], input="hi\n\n")
    assert chatted.exit_code == 0 and "memory>" in chatted.output
    changed = runner.invoke(app, [*args, "--ranks", "2,8"])  # other settings, same folder
    assert changed.exit_code == 2 and "--restart" in changed.output
    bad = runner.invoke(app, [*args, "--layers", "0,7"])
    assert bad.exit_code == 2 and "depth is 2" in bad.output
    assert runner.invoke(app, ["chat", "-u", "nobody", "--memory", "milp"]).exit_code == 2
    listed = runner.invoke(app, ["users"])
    assert "bob  0 conversations  milp: n=" in listed.output and "(3 conversations)" in listed.output


def test_forgetting_a_conversation_the_milp_memory_learned_removes_it():
    from conftest import FIXTURES

    from paramem.data.formats import load_conversations
    from paramem.lifecycle.forget import forget
    from paramem.memory.milp.model import learn
    from paramem.store.user import UserMemory

    model, tokenizer = tiny_model()
    conversations = load_conversations(FIXTURES / "msc.txt")
    learned = learn(
        model, tokenizer, conversations, MultiLoraConfig(loras=1, rank=2), MiLPTrainConfig(max_new_tokens=4)
    )
    with UserMemory("dora") as memory:
        ids = [c.id for c in conversations]
        memory.milp.commit(learned.save_pretrained, {"base_model": "tiny", "memory": {}, "conversations": ids})
    with pytest.raises(InputError, match="no learned conversation"):
        forget("dora", "not-there")
    assert UserMemory("dora").milp.record() is not None
    result = forget("dora", ids[1])
    assert result.how == "milp dropped" and "search again" in result.note
    assert UserMemory("dora").milp.record() is None and not UserMemory("dora").milp.root.exists()
