"""Yes/no metrics: overall accuracy, accuracy on yes and on no probes separately, macro-F1 and the
yes-rate (0.5 accuracy on balanced probes may just be "always no"), each accuracy with a 95%
bootstrap interval over probes; and the ranking AUC of the scores, which needs no threshold, so it
tells a method that knows nothing from one whose knowledge a decision rule fails to calibrate."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field

BOOTSTRAP_SAMPLES = 1000


@dataclass(frozen=True)
class YesNoMetrics:
    accuracy: float
    yes_accuracy: float  # share of "yes" probes answered yes
    no_accuracy: float  # share of "no" probes answered no
    macro_f1: float  # mean of the F1 of "yes" and the F1 of "no"
    yes_rate: float  # share of all probes answered yes
    n: int
    n_yes: int
    n_no: int
    # 95% percentile-bootstrap interval of each of the four figures above, resampling probes
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, saved: dict) -> YesNoMetrics:
        return cls(**{**saved, "intervals": {name: tuple(v) for name, v in saved.get("intervals", {}).items()}})


def _f1(gold: list[str], predicted: list[str], label: str) -> float:
    true_positive = sum(g == p == label for g, p in zip(gold, predicted))
    predicted_count = sum(p == label for p in predicted)
    gold_count = sum(g == label for g in gold)
    if true_positive == 0:
        return 0.0
    precision, recall = true_positive / predicted_count, true_positive / gold_count
    return 2 * precision * recall / (precision + recall)


def _point(gold: list[str], predicted: list[str]) -> dict[str, float]:
    pairs = list(zip(gold, predicted))
    yes = [p for g, p in pairs if g == "yes"]
    no = [p for g, p in pairs if g == "no"]
    return {
        "accuracy": sum(g == p for g, p in pairs) / len(pairs),
        "yes_accuracy": sum(p == "yes" for p in yes) / len(yes) if yes else float("nan"),
        "no_accuracy": sum(p == "no" for p in no) / len(no) if no else float("nan"),
        "macro_f1": (_f1(gold, predicted, "yes") + _f1(gold, predicted, "no")) / 2,
    }


def bootstrap_intervals(
    gold: list[str], predicted: list[str], samples: int = BOOTSTRAP_SAMPLES, seed: int = 0
) -> dict[str, tuple[float, float]]:
    """2.5th and 97.5th percentiles of each figure over `samples` resamples of the probes (with
    replacement, stratified by gold label so every resample keeps the yes/no balance)."""
    rng = random.Random(seed)
    by_label = {label: [i for i, g in enumerate(gold) if g == label] for label in ("yes", "no")}
    draws: dict[str, list[float]] = {}
    for _ in range(samples):
        chosen = [rng.choice(idx) for idx in by_label.values() if idx for _ in idx]
        for name, value in _point([gold[i] for i in chosen], [predicted[i] for i in chosen]).items():
            draws.setdefault(name, []).append(value)
    out = {}
    for name, values in draws.items():
        values.sort()
        out[name] = (values[int(0.025 * (len(values) - 1))], values[int(0.975 * (len(values) - 1))])
    return out


def yes_no_metrics(gold: list[str], predicted: list[str], intervals: bool = True) -> YesNoMetrics:
    assert len(gold) == len(predicted) and gold, "need one prediction per probe"
    point = _point(gold, predicted)
    return YesNoMetrics(
        **point,
        yes_rate=sum(p == "yes" for p in predicted) / len(predicted),
        n=len(gold),
        n_yes=sum(g == "yes" for g in gold),
        n_no=sum(g == "no" for g in gold),
        intervals=bootstrap_intervals(gold, predicted) if intervals else {},
    )


def ranking_auc(gold: list[str], scores: list[float]) -> float:
    """Chance that a random yes probe scores above a random no probe (ties count half): 0.5 is no
    information, 1.0 a perfect ranking, whatever threshold a decision rule would pick."""
    n_yes, n_no = gold.count("yes"), gold.count("no")
    if not n_yes or not n_no:
        return float("nan")
    # Mann-Whitney U from ranks (ties share their mean rank): O(n log n), not all yes x no pairs.
    order = sorted(range(len(scores)), key=scores.__getitem__)
    ranks = [0.0] * len(scores)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and scores[order[end + 1]] == scores[order[start]]:
            end += 1
        for position in range(start, end + 1):
            ranks[order[position]] = (start + end) / 2 + 1
        start = end + 1
    yes_rank_sum = sum(r for r, g in zip(ranks, gold) if g == "yes")
    return (yes_rank_sum - n_yes * (n_yes + 1) / 2) / (n_yes * n_no)


def ranking_auc_interval(
    gold: list[str], scores: list[float], samples: int = BOOTSTRAP_SAMPLES, seed: int = 0
) -> tuple[float, float]:
    """95% stratified bootstrap interval of `ranking_auc`, as for the accuracies."""
    rng = random.Random(seed)
    by_label = [[i for i, g in enumerate(gold) if g == label] for label in ("yes", "no")]
    values = []
    for _ in range(samples):
        chosen = [rng.choice(idx) for idx in by_label if idx for _ in idx]
        values.append(ranking_auc([gold[i] for i in chosen], [scores[i] for i in chosen]))
    values.sort()
    return values[int(0.025 * (samples - 1))], values[int(0.975 * (samples - 1))]


def margin_summary(gold: list[str], margins: list[float]) -> dict:
    """Probes read "yes" above a margin of 0 (each margin is a score minus its rule's threshold):
    accuracy with yes and no apart and their 95% intervals, and the margins' AUC with its interval."""
    metrics = yes_no_metrics(gold, ["yes" if m > 0 else "no" for m in margins]).to_dict()
    return {
        **{k: metrics[k] for k in ("accuracy", "yes_accuracy", "no_accuracy", "n", "intervals")},
        "auc": round(ranking_auc(gold, margins), 4),
        "auc_interval": [round(v, 4) for v in ranking_auc_interval(gold, margins)],
    }


def fit_threshold(scores: list[float], labels: list[str]) -> float:
    """The log-odds threshold with the best balanced accuracy on labelled held-out questions.

    Ties go to the threshold nearest 0, so a memory that separates nothing keeps P(yes) > P(no)."""
    yes = [s for s, label in zip(scores, labels) if label == "yes"]
    no = [s for s, label in zip(scores, labels) if label == "no"]
    if not yes or not no:
        return 0.0
    ordered = sorted(set(scores))
    candidates = [ordered[0] - 1.0, *[(a + b) / 2 for a, b in zip(ordered, ordered[1:])], ordered[-1] + 1.0]

    def balanced_accuracy(t: float) -> float:
        return (sum(s > t for s in yes) / len(yes) + sum(s <= t for s in no) / len(no)) / 2

    return max(candidates, key=lambda t: (balanced_accuracy(t), -abs(t)))
