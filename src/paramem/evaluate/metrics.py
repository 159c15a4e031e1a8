"""Yes/no metrics: overall accuracy, accuracy on yes and on no probes separately, and the yes-rate
(0.5 accuracy on balanced probes may just be "always no")."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class YesNoMetrics:
    accuracy: float
    yes_accuracy: float  # share of "yes" probes answered yes
    no_accuracy: float  # share of "no" probes answered no
    yes_rate: float  # share of all probes answered yes
    n: int
    n_yes: int
    n_no: int

    def to_dict(self) -> dict:
        return asdict(self)


def yes_no_metrics(gold: list[str], predicted: list[str]) -> YesNoMetrics:
    assert len(gold) == len(predicted) and gold, "need one prediction per probe"
    pairs = list(zip(gold, predicted))
    yes = [p for g, p in pairs if g == "yes"]
    no = [p for g, p in pairs if g == "no"]
    return YesNoMetrics(
        accuracy=sum(g == p for g, p in pairs) / len(pairs),
        yes_accuracy=sum(p == "yes" for p in yes) / len(yes) if yes else float("nan"),
        no_accuracy=sum(p == "no" for p in no) / len(no) if no else float("nan"),
        yes_rate=sum(p == "yes" for p in predicted) / len(predicted),
        n=len(pairs), n_yes=len(yes), n_no=len(no))
