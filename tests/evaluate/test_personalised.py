import json
from dataclasses import replace

import pytest
from conftest import FIXTURES

from paramem.config import MiLPTrainConfig
from paramem.errors import InputError
from paramem.evaluate import personalised
from paramem.evaluate.episodes import msc_episodes
from paramem.evaluate.judge import both_orders, calibrated, judge_check, strict, tally
from paramem.evaluate.personalised import (
    ONE_METHOD_SETTINGS,
    RepliesConfig,
    dev_user,
    history_prompt,
    reply_settings,
    run,
)
from paramem.memory.milp.search import SearchConfig
from paramem.model.loading import tiny_model

MSC = FIXTURES / "msc"
TINY_TRAIN = MiLPTrainConfig(memory_epochs=1, instruction_epochs=1, max_new_tokens=4)


def episodes():
    return msc_episodes(
        MSC / "msc_dialogue" / "session_3" / "test.txt", MSC / "msc_personasummary" / "session_4" / "test.txt", dev=1
    )


def test_dev_user_scores_the_last_history_session_learned_from_the_ones_before():
    user = dev_user(episodes()[0])
    assert [c.id for c in user.train] == ["test_0/session_1", "test_0/session_2"]
    assert user.validation.id == "test_0/session_3"


def test_malp_dev_user_scores_only_the_reply_it_did_not_learn():
    from paramem.evaluate.episodes import malp_episodes

    episode = malp_episodes(FIXTURES / "malp.json", dev=1)[0]
    user = dev_user(episode)
    ((context, gold),) = user.scored_turns()
    assert gold == episode.history[0].messages[-1].content
    assert user.train[0].messages == episode.history[0].messages[:-2] == tuple(context[:-1])


def test_text_prompt_holds_the_whole_history():
    prompt = history_prompt(episodes()[0].history)
    assert all(m.content in prompt for c in episodes()[0].history for m in c.messages)


class Fixed:
    """A judge with a fixed preference for reply A, or for the longer reply."""

    name = "fixed"

    def __init__(self, rule):
        self.rule = rule

    def prefers_a(self, context, a, b):
        return self.rule(a, b)


def test_pairs_are_judged_in_both_orders():
    always_a = Fixed(lambda a, b: 1.0)  # pure position bias: every pair a tie, agreement 0
    verdict = tally([strict(*both_orders(always_a, [], "x", "yy")) for _ in range(4)])
    assert (verdict.ties, verdict.win_rate, verdict.agreement) == (4, 0.5, 0.0)
    longer = Fixed(lambda a, b: len(a) - len(b))
    assert strict(*both_orders(longer, [], "long reply", "short")) == "win"
    assert strict(*both_orders(longer, [], "short", "long reply")) == "loss"
    assert strict(*both_orders(longer, [], "same", "same")) == "tie"


def test_the_calibrated_rule_cancels_a_position_bias_the_strict_rule_cannot_see_past():
    # leans hard towards "A", and a little towards the longer reply
    biased = Fixed(lambda a, b: 5.0 + 0.1 * (len(a) - len(b)))
    first, second = both_orders(biased, [], "a long reply", "short")
    assert (first, second) == (5.0 + 0.7, -(5.0 - 0.7))
    assert strict(first, second) == "tie" and calibrated(first, second) == "win"
    assert calibrated(*both_orders(biased, [], "short", "a long reply")) == "loss"
    assert calibrated(*both_orders(biased, [], "same", "same")) == "tie"


def test_the_local_judge_reads_the_log_odds_of_a_against_b_at_its_answer():
    from paramem.evaluate.judge import JUDGE_PROMPT, LocalJudge, render_context

    model, tokenizer = tiny_model()
    judge = LocalJudge(model, tokenizer)
    context = list(episodes()[0].test.messages[:3])
    prompt = JUDGE_PROMPT.format(context=render_context(context), a="first reply", b="second")
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    logits = model(**ids).logits[0, -1]
    expected = (logits[judge.a] - logits[judge.b]).item()
    assert judge.prefers_a(context, "first reply", "second") == pytest.approx(expected, abs=1e-4)


def test_the_judge_check_counts_the_gold_reply_picked_under_both_rules():
    biased = Fixed(lambda a, b: 5.0 + 0.1 * (len(a) - len(b)))
    cases = [([], "the longer gold reply", "other"), ([], "gold", "a longer other reply")]
    check = judge_check(biased, cases)
    assert check["cases"] == 2
    assert (check["strict"]["wins"], check["strict"]["ties"], check["strict"]["losses"]) == (0, 2, 0)
    assert (check["calibrated"]["wins"], check["calibrated"]["losses"]) == (1, 1)


def test_run_compares_every_method_and_resumes_without_replying_again(tmp_path, monkeypatch):
    config = RepliesConfig(
        episodes=1,
        dev_users=1,
        dev_episodes=1,
        replies=2,
        methods=["base", "tplp", "rag", "uelp", "milp", "milp-instruction", "milp-memory"],
        factor_sets=["rank", "loras,layers,rank"],
        search=SearchConfig(initial_trials=2, bo_trials=0),
        train=TINY_TRAIN,
    )
    results = run(config, FIXTURES, tmp_path, "tiny")
    methods = results["methods"]
    assert list(methods) == [*config.methods, "milp@rank"]  # the search-space ablation's extra row
    for name, figures in methods.items():
        assert figures["replies"] == 1 and 0 <= figures["rouge_l"] <= 1  # the report episode has one reply
        if name != "tplp":
            verdict = figures["win_vs_tplp"]
            assert verdict["wins"] + verdict["ties"] + verdict["losses"] == 1
            balanced = figures["calibrated_win_vs_tplp"]
            assert balanced["wins"] + balanced["ties"] + balanced["losses"] == 1
    assert results["judge_check"]["cases"] == 0  # one report episode: no other episode's reply to pit
    assert set(results["search"]) == {"rank", "loras,layers,rank"}
    assert len(results["search"]["rank"]["hypervolume"]) == 3
    assert results["episodes"]["ids"] == ["test_1"] and results["dev_episodes"] == ["test_0"]
    report = (tmp_path / "report.md").read_text()
    assert report.count("| milp") == 4
    base_row = next(line for line in report.splitlines() if line.startswith("| base |"))
    b = methods["base"]["calibrated_win_vs_tplp"]  # the calibrated verdict, with its ties
    assert f"| {b['win_rate']:.2f} ({b['wins']}/{b['ties']}/{b['losses']}) |" in base_row
    # the ablation table: one row per factor set, each with the report figures of its own memory
    rows = [line for line in report.splitlines() if line.startswith(("| rank |", "| loras,layers,rank |"))]
    assert len(rows) == 2
    assert rows[0].endswith(f"| {methods['milp@rank']['persona_f1']:.3f} |")
    assert rows[1].endswith(f"| {methods['milp']['persona_f1']:.3f} |")

    def no_more_replies(*args):
        raise AssertionError("a saved episode was replied again")

    monkeypatch.setattr(personalised.Replier, "replies", no_more_replies)
    again = run(config, FIXTURES, tmp_path, "tiny")
    assert json.dumps(again["methods"], sort_keys=True) == json.dumps(methods, sort_keys=True)
    # replies made under other settings are never mixed in: the saved episode is named
    other = replace(config, retrieved=3)  # a RAG setting: the base, TpLP replies before it are still valid
    with pytest.raises(InputError, match="test_1.json: the saved rag replies were made with other settings"):
        run(other, FIXTURES, tmp_path, "tiny")
    # nor are trials: a search resumes only with the model, dtype and training it began with
    trained_otherwise = replace(config, train=replace(TINY_TRAIN, repetition_penalty=1.3))
    with pytest.raises(InputError, match="spec.json: a search with other settings, dtype or data"):
        run(trained_otherwise, FIXTURES, tmp_path, "tiny")
    spec = tmp_path / "search" / "rank" / "spec.json"
    assert json.loads(spec.read_text())["dtype"] == "float32"
    spec.write_text(spec.read_text().replace('"float32"', '"bfloat16"'))  # as if begun on a bf16 CPU
    with pytest.raises(InputError, match="spec.json: a search with other settings, dtype or data"):
        run(config, FIXTURES, tmp_path, "tiny")


def test_a_setting_of_one_method_changes_only_that_methods_reply_settings():
    config = RepliesConfig(methods=["base", "tplp", "rag", "uelp", "plum"])
    changed = {
        "retrieved": 3,
        "soft_prompt_tokens": 8,
        "soft_prompt_learning_rate": 0.05,
        "teacher": "extractive",
        "plum_pairs": 5,
    }
    # every one-method setting is a real field, and each is changed below
    assert {k for keys in ONE_METHOD_SETTINGS.values() for k in keys} == set(changed)
    for owner, setting in ((m, k) for m, keys in ONE_METHOD_SETTINGS.items() for k in keys):
        other = replace(config, **{setting: changed[setting]})
        for method in config.methods:
            same = reply_settings(method, config, {}, "tiny", "float32") == reply_settings(
                method, other, {}, "tiny", "float32"
            )
            assert same == (method != owner), (setting, method)
    shared = replace(config, train=replace(config.train, max_new_tokens=8))  # decoding: every method's
    assert all(
        reply_settings(m, config, {}, "tiny", "float32") != reply_settings(m, shared, {}, "tiny", "float32")
        for m in config.methods
    )


def test_plum_row_learns_each_history_into_its_own_store(tmp_path):
    config = RepliesConfig(episodes=1, dev_episodes=1, replies=1, methods=["tplp", "plum"], teacher="extractive")
    results = run(config, FIXTURES, tmp_path, "tiny")
    assert results["methods"]["plum"]["replies"] == 1 and results["search"] == {}
    stores = list((tmp_path / "plum").iterdir())
    assert [s.name for s in stores] == ["test_1"] and (stores[0] / "users" / "episode").is_dir()
    assert "extractive teacher" in (tmp_path / "report.md").read_text()


def test_bad_method_or_teacher_is_refused():
    with pytest.raises(InputError, match="methods"):
        RepliesConfig(methods=["milp", "magic"])
    with pytest.raises(InputError, match="teacher"):
        RepliesConfig(teacher="openai")


def test_the_judge_check_pits_each_gold_reply_against_the_next_episodes():
    from paramem.data.conversations import Conversation, Message
    from paramem.evaluate.episodes import Episode
    from paramem.evaluate.personalised import mismatched_cases

    def episode(name):
        turns = tuple(Message("user" if i % 2 == 0 else "assistant", f"{name} turn {i}") for i in range(4))
        return Episode(name, (), Conversation(name, turns), (1, 3), ())

    cases = mismatched_cases([(episode("e1"), {}), (episode("e2"), {})])
    assert [(len(c), gold, other) for c, gold, other in cases] == [
        (1, "e1 turn 1", "e2 turn 1"),
        (3, "e1 turn 3", "e2 turn 3"),
        (1, "e2 turn 1", "e1 turn 1"),
        (3, "e2 turn 3", "e1 turn 3"),
    ]
