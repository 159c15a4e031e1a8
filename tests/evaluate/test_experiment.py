"""The LoCoMo experiment end to end on the tiny model: learn, curve, methods, open questions,
retention, report; then a rerun resumes instead of starting over."""

import json

from conftest import FIXTURES

from paramem.config import RememberConfig, TrainConfig
from paramem.evaluate.curves import session_accuracies
from paramem.evaluate.experiment import run_experiment
from paramem.evaluate.experiment_config import ExperimentConfig
from paramem.evaluate.probes import load_probes


def tiny_config(**overrides):
    settings = dict(
        locomo=str(FIXTURES / "locomo" / "locomo8.json"),
        mmlu=str(FIXTURES / "mmlu"),
        arc=str(FIXTURES / "arc" / "ARC-Challenge"),
        remember=RememberConfig(base_model="tiny", train=TrainConfig(epochs=1)),
        sessions=2,
        probes_per_session=4,
        methods=["none", "memory", "bm25", "hybrid"],
        open_questions=2,
        open_methods=["memory", "bm25"],
        mmlu_subjects=1,
        mmlu_per_subject=2,
        arc_items=2,
    )
    settings.update(overrides)
    return ExperimentConfig(**settings)


def test_experiment_writes_results_report_and_plots_and_resumes(tmp_path):
    out = tmp_path / "run"
    results = run_experiment(tiny_config(), out)

    assert set(results["methods"]) == {"none", "memory", "bm25", "hybrid"}
    for method in results["methods"].values():
        m = method["metrics"]["prior"]
        assert m["n"] == 8 and m["n_yes"] == 4 and "accuracy" in m["intervals"]
    assert len(results["curve"]) == 2 and len(results["curve"][0]) == 1 and len(results["curve"][1]) == 2
    # The curve's last point reads the memory as its table row does (log-odds, prior rule here).
    memory = results["methods"]["memory"]
    assert results["curve"][-1] == session_accuracies(memory["predictions"], memory["thresholds"]["prior"])
    assert set(results["open"]) == {"memory", "bm25"} and results["open"]["memory"]["n"] == 2
    assert results["retention"]["mmlu"]["base"]["n"] == 2 and results["retention"]["arc"]["memory"]["n"] == 2
    assert results["costs"]["memory"]["bytes_per_user"] > 0 and results["costs"]["none"]["bytes_per_user"] == 0
    report = (out / "report.md").read_text()
    for heading in (
        "Yes/no probes",
        "Open questions",
        "Forgetting curve (memory, log-odds, prior",
        "Capability retention",
    ):
        assert heading in report
    assert (out / "forgetting.png").stat().st_size > 0 and (out / "methods.png").stat().st_size > 0
    assert len(load_probes(out / "probes.jsonl")) == 8  # the probes, readable as a probe file
    saved = json.loads((out / "results.json").read_text())
    assert saved["git_commit"] is not None and saved["base_model"] == "tiny" and saved["command"]

    # A rerun finds every session learned and every step done: nothing is recomputed.
    before = (out / "home" / "users" / "locomo" / "manifest.sqlite").stat().st_mtime_ns
    again = run_experiment(tiny_config(), out)
    assert again["curve"] == results["curve"] and again["methods"] == json.loads(json.dumps(results["methods"]))
    assert (out / "home" / "users" / "locomo" / "manifest.sqlite").stat().st_mtime_ns == before


def test_a_folder_with_other_settings_is_refused(tmp_path):
    import pytest

    run_experiment(tiny_config(open_methods=[], mmlu=None, arc=None, methods=["none", "memory"]), tmp_path / "run")
    with pytest.raises(ValueError, match="other settings"):
        run_experiment(
            tiny_config(
                remember=RememberConfig(base_model="tiny", train=TrainConfig(epochs=2)),
                open_methods=[],
                mmlu=None,
                arc=None,
            ),
            tmp_path / "run",
        )


def test_open_questions_are_spread_over_categories():
    from paramem.evaluate.experiment import spread_over_categories
    from paramem.evaluate.locomo import OpenQuestion

    questions = [OpenQuestion("s", f"q{i}", "a", category) for i, category in enumerate([1, 1, 1, 2, 2, 5])]
    assert [q.category for q in spread_over_categories(questions, 4)] == [1, 2, 5, 1]
    assert spread_over_categories(questions, None) == questions


def test_changing_the_probes_changes_no_threshold_and_no_epoch_choice(tmp_path):
    """Epochs, learning rates and every rule's threshold come from the teacher's held-out pairs: a run
    with other probes (another seed's draw, more per session) learns and decides exactly the same."""
    train = TrainConfig(epochs=3, min_epochs=1, patience=1, learning_rates=[5e-4, 1e-3])
    common = dict(remember=RememberConfig(base_model="tiny", train=train), open_methods=[], mmlu=None, arc=None)
    one = run_experiment(tiny_config(probes_per_session=2, **common), tmp_path / "a")
    two = run_experiment(tiny_config(probes_per_session=4, **common), tmp_path / "b")
    assert [p["question"] for p in one["methods"]["memory"]["predictions"]] != [
        p["question"] for p in two["methods"]["memory"]["predictions"]
    ]
    chosen = [(r["epochs"], r["learning_rate"], r["heldout_accuracy"]) for r in one["learned"]]
    assert chosen == [(r["epochs"], r["learning_rate"], r["heldout_accuracy"]) for r in two["learned"]]
    for method in one["methods"]:
        assert one["methods"][method]["thresholds"] == two["methods"][method]["thresholds"], method


def test_the_scale_curve_reads_only_the_sessions_so_far_and_resumes(tmp_path):
    common = dict(methods=["none", "memory"], open_methods=[], mmlu=None, arc=None, sessions=3)
    config = tiny_config(curve_methods=["context", "bm25"], curve_every=2, **common)
    results = run_experiment(config, tmp_path / "run")

    points = results["text_curve"]
    assert [p["learned"] for p in points] == [2, 3]  # every 2 sessions, and the last
    for point in points:
        sessions = set(results["benchmark"]["sessions"][: point["learned"]])
        for scored in point["methods"].values():
            assert set(scored["accuracy"]) == sessions and scored["seconds_per_answer"] > 0
        assert 1 <= point["methods"]["context"]["sessions_read"] <= point["learned"]
    # context reads more tokens as sessions are added (until its budget cuts the oldest)
    assert points[0]["methods"]["context"]["prompt_tokens"] < points[1]["methods"]["context"]["prompt_tokens"]
    report = (tmp_path / "run" / "report.md").read_text()
    assert "## Scale" in report and "| 3 |" in report
    assert "(memory: prior rule; the methods that read the text: prior rule)" in report  # a sequential LoRA's rule
    assert run_experiment(config, tmp_path / "run")["text_curve"] == points  # nothing scored again


def test_a_run_saved_before_a_setting_existed_resumes_with_its_default(tmp_path):
    import pytest

    common = dict(methods=["none", "memory"], open_methods=[], mmlu=None, arc=None)
    run_experiment(tiny_config(**common), tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    del saved["config"]["curve_methods"], saved["config"]["remember"]["train"]["distill_queries"]
    (tmp_path / "run" / "results.json").write_text(json.dumps(saved))

    assert run_experiment(tiny_config(**common), tmp_path / "run")["methods"]  # the defaults it ran with
    with pytest.raises(ValueError, match="other settings"):  # but not what it never did
        run_experiment(tiny_config(curve_methods=["dense"], **common), tmp_path / "run")


def test_a_distilled_run_saved_before_checks_existed_is_not_taken_for_one_with_checks():
    from dataclasses import asdict, replace

    from paramem.evaluate.experiment import same_settings

    def distill(checks):
        config = tiny_config()
        config.remember = replace(config.remember, train=TrainConfig(objective="distill", distill_checks=checks))
        return config

    saved = json.loads(json.dumps(asdict(distill(0))))
    del saved["remember"]["train"]["distill_checks"]  # as runs saved before session 14
    assert not same_settings(saved, distill(32))  # the default now, not what that run did
    assert same_settings(saved, distill(0))
    # a plum run reads no distill setting: saved with checks 0, it resumes under the new default
    plum = json.loads(json.dumps(asdict(tiny_config())))
    plum["remember"]["train"]["distill_checks"] = 0
    assert same_settings(plum, tiny_config())


def test_the_scale_curve_scores_only_methods_that_read_no_memory():
    import pytest

    from paramem.errors import InputError

    with pytest.raises(InputError, match="--curve-methods"):
        tiny_config(curve_methods=["hybrid"])
    with pytest.raises(InputError, match="--curve-every"):
        tiny_config(curve_every=0)


def test_a_cartridge_memorys_curve_reads_it_under_the_balanced_rule_as_its_table_row(tmp_path):
    train = TrainConfig(epochs=1, objective="distill", form="cartridge", distill_queries=4, distill_checks=2)
    config = tiny_config(
        remember=RememberConfig(base_model="tiny", train=train),
        methods=["memory"],
        open_questions=0,
        mmlu=None,
        arc=None,
    )
    results = run_experiment(config, tmp_path / "run")
    memory = results["methods"]["memory"]
    assert results["curve"][-1] == session_accuracies(memory["predictions"], memory["thresholds"]["balanced"])
    assert set(results["resident_gb"]) == set(results["curve"][-1])  # memory measured after each session
    report = (tmp_path / "run" / "report.md").read_text()
    assert "Forgetting curve (memory, log-odds, balanced rule" in report and "under the balanced rule" in report
