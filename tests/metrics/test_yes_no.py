from hypothesis import given, settings
from hypothesis import strategies as st

from paramem.metrics.yes_no import bootstrap_intervals, ranking_auc, ranking_auc_interval, yes_no_metrics


def test_yes_and_no_accuracy_are_reported_apart():
    m = yes_no_metrics(["yes", "yes", "no", "no"], ["yes", "no", "no", "no"])
    assert (m.accuracy, m.yes_accuracy, m.no_accuracy, m.yes_rate) == (0.75, 0.5, 1.0, 0.25)
    # F1(yes) = 2/3, F1(no) = 0.8
    assert abs(m.macro_f1 - (2 / 3 + 0.8) / 2) < 1e-9


def test_always_no_has_half_accuracy_and_a_poor_macro_f1():
    m = yes_no_metrics(["yes", "no"] * 10, ["no"] * 20)
    assert m.accuracy == 0.5 and m.yes_accuracy == 0.0 and m.no_accuracy == 1.0
    assert abs(m.macro_f1 - (0 + 2 / 3) / 2) < 1e-9


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["yes", "no"]), st.sampled_from(["yes", "no"])), min_size=2, max_size=60))
def test_bootstrap_interval_contains_the_point_estimate(rows):
    gold, predicted = [g for g, _ in rows], [p for _, p in rows]
    m = yes_no_metrics(gold, predicted)
    low, high = m.intervals["accuracy"]
    assert 0.0 <= low <= m.accuracy <= high <= 1.0


def test_interval_narrows_with_more_probes():
    small = bootstrap_intervals(["yes", "no"] * 10, ["yes", "yes", "no", "no"] * 5)["accuracy"]
    large = bootstrap_intervals(["yes", "no"] * 200, ["yes", "yes", "no", "no"] * 100)["accuracy"]
    assert (large[1] - large[0]) < (small[1] - small[0])


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["yes", "no"]), st.integers(-3, 3)), min_size=2, max_size=40))
def test_ranking_auc_is_the_share_of_yes_no_pairs_ranked_right(rows):
    gold, scores = [g for g, _ in rows], [float(s) for _, s in rows]
    pairs = [(y, n) for gy, y in rows if gy == "yes" for gn, n in rows if gn == "no"]
    if not pairs:
        return
    expected = sum((y > n) + 0.5 * (y == n) for y, n in pairs) / len(pairs)
    assert abs(ranking_auc(gold, scores) - expected) < 1e-9


def test_ranking_auc_needs_no_threshold_and_has_an_interval():
    gold = ["yes", "no"] * 10
    shifted = [5.0 + i / 4 if g == "yes" else 4.0 + i / 4 for i, g in enumerate(gold)]  # all above 0, overlapping
    assert ranking_auc(gold, shifted) > 0.5 and ranking_auc(gold, [1.0] * 20) == 0.5
    low, high = ranking_auc_interval(gold, shifted)
    assert low <= ranking_auc(gold, shifted) <= high


def test_margin_summary_reads_yes_above_zero_and_ranks_by_margin():
    from paramem.metrics.yes_no import margin_summary

    summary = margin_summary(["yes", "yes", "no", "no"], [0.5, -0.1, -0.3, 0.2])
    assert (summary["accuracy"], summary["yes_accuracy"], summary["no_accuracy"], summary["n"]) == (0.5, 0.5, 0.5, 4)
    assert summary["auc"] == 0.75 and len(summary["auc_interval"]) == 2
    assert set(summary["intervals"]) >= {"accuracy"}
