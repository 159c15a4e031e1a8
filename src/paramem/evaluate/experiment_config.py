"""The LoCoMo experiment's settings (`paramem locomo`): which sessions, methods and steps, where."""

from __future__ import annotations

from dataclasses import dataclass, field

from paramem.config import RememberConfig, TrainConfig
from paramem.errors import check_option
from paramem.evaluate.run import METHODS
from paramem.read.retrieval import RetrievalConfig

USER = "locomo"


@dataclass
class ExperimentConfig:
    """One run of the LoCoMo experiment; PLUM's ablations are the fields marked (ablation)."""

    locomo: str  # path of locomo8.json
    mmlu: str | None = None  # folder of MMLU (None: skip retention)
    arc: str | None = None  # folder of ARC-Challenge
    teacher: str = "extractive"
    sample: int = 0  # which LoCoMo sample (pair of speakers)
    sessions: int | None = 6  # its first N sessions in date order (None: all)
    probes_per_session: int = 8  # yes/no probes per session, half yes
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    open_questions: int | None = 20  # LoCoMo questions answered by generation per method (None: all)
    open_methods: list[str] = field(
        default_factory=lambda: ["none", "memory", "context", "bm25", "dense", "hybrid", "text", "paramem"]
    )
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    # How each session is learned: base model, epochs (3 here, PLUM 10), lambda, negatives per positive,
    # open pairs and statements are PLUM's ablations. Closed only means no open answers of any kind,
    # the recall cue's included (`closed_only`).
    remember: RememberConfig = field(default_factory=lambda: RememberConfig(train=TrainConfig(epochs=3)))
    # The scale curve: these methods, after every `curve_every` sessions (and the last), on the probes
    # of the sessions so far, reading only those sessions (the memory's curve is after every session).
    curve_methods: list[str] = field(default_factory=list)
    curve_every: int = 5

    def __post_init__(self):
        check_option(self.sample >= 0, "sample (--sample)", "0 or more", self.sample)
        check_option(self.sessions is None or self.sessions >= 1, "sessions (--sessions)", "at least 1", self.sessions)
        check_option(
            self.probes_per_session >= 2 and self.probes_per_session % 2 == 0,
            "probes_per_session (--probes-per-session)",
            "an even number, 2 or more (half are yes)",
            self.probes_per_session,
        )
        check_option(
            self.open_questions is None or self.open_questions >= 0,
            "open_questions (--open-questions)",
            "0 or more",
            self.open_questions,
        )
        check_option(
            set(self.curve_methods) <= set(CURVE_METHODS),
            "curve_methods (--curve-methods)",
            f"some of {', '.join(CURVE_METHODS)} (the memory's curve is always there)",
            ",".join(self.curve_methods),
        )
        check_option(self.curve_every >= 1, "curve_every (--curve-every)", "at least 1", self.curve_every)

    @property
    def base_model(self) -> str:
        return self.remember.base_model

    mmlu_subjects: int | None = 10  # None: all 57
    mmlu_per_subject: int | None = 10  # None: every test item
    arc_items: int | None = 100  # None: all 1,172


CURVE_METHODS = (
    "context",
    "bm25",
    "dense",
    "fused",
    "text",
)  # what the scale curve can score beside the memory: no adapter
