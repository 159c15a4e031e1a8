"""report.py: an experiment's results.json read back into report.md's tables."""

from paramem.evaluate.report import curve_rows, curve_rule, methods_table


def metrics(accuracy, yes, no):
    intervals = {"accuracy": (accuracy - 0.1, accuracy + 0.1), "yes_accuracy": (0, 1), "no_accuracy": (0, 1)}
    return {
        "accuracy": accuracy,
        "yes_accuracy": yes,
        "no_accuracy": no,
        "macro_f1": accuracy,
        "yes_rate": 0.5,
        "intervals": intervals,
    }


def test_the_methods_table_gives_yes_and_no_accuracy_apart_with_their_costs():
    results = {
        "methods": {
            "none": {"metrics": {"prior": metrics(0.5, 0.25, 0.75)}, "prompt_tokens": 40},
            "memory": {"metrics": {"prior": metrics(0.625, 0.5, 0.75)}, "prompt_tokens": 40},
        },
        "open": {"memory": {"f1": 0.123}},
        "costs": {"memory": {"seconds_per_answer": 0.5, "bytes_per_user": 1234}},
    }
    lines = methods_table(results, {"none": "0.500 [0.40, 0.60]", "memory": "0.700 [0.60, 0.80]"})
    assert lines[0].startswith("| method | accuracy [95% CI] | yes-acc | no-acc")
    assert lines[2].startswith("| none | 0.500 [0.40, 0.60] | 0.250 [0.00, 1.00] | 0.750 [0.00, 1.00] |")
    assert "| 0.123 | 40 | 0.50 | 1,234 |" in lines[3]  # open F1, prompt tokens, seconds, bytes


def test_the_forgetting_curve_reads_each_session_right_after_it_was_learned_and_at_the_end():
    results = {"curve": [{"s1": 1.0}, {"s1": 0.75, "s2": 0.5}, {"s1": 0.5, "s2": 0.5, "s3": 1.0}]}
    sessions, right_after, at_end, growing = curve_rows(results)
    assert sessions == ["s1", "s2", "s3"]
    assert right_after == [1.0, 0.5, 1.0] and at_end == [0.5, 0.5, 1.0]
    assert growing == [1.0, 0.625, 2.0 / 3]


def test_the_curve_is_read_under_its_forms_rule_and_older_results_as_sequential():
    assert curve_rule({}) == "prior"
    assert curve_rule({"remember": {"train": {"form": "cartridge"}}}) == "balanced"
