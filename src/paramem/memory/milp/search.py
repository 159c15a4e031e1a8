"""MiLP's search: which memory (n LoRAs, layer mask, rank r) to give a user, by multi-objective Bayesian
optimisation with BoTorch, as the MiLP paper does (section 2.2.2).

- Surrogate: one SAAS fully Bayesian GP per objective (`SaasFullyBayesianSingleTaskGP`, fitted by
  NUTS), made for few trials in many dimensions.
- Acquisition: qLogNEHVI, the log form of noisy expected hypervolume improvement, maximised over
  configurations not tried yet (the space is discrete, so candidates are configurations, never
  points that round to one already tried).
- Objectives: validation cross-entropy of the gold replies (lower is better) and ROUGE-L of generated
  replies (higher is better), averaged over the development users.
- Trial 0 is the base model (n = 0): its loss and ROUGE-L 0 are the reference point of the
  hypervolume, so a configuration counts only where it beats no memory on loss.
- Then random configurations, then BO trials. Each trial is appended to `trials.jsonl` as it
  finishes; a rerun reads it and goes on, never redoing one.

The encoding, each coordinate in [0, 1]: n / max_loras; the rank's place in `ranks`; one coordinate per
block of `block_size` consecutive candidate layers, on or off. Factors not searched are fixed
(`SearchSpace.fixed`); the paper's search-space ablation searches n, r or the layers alone or in pairs.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from paramem.config import MILP_RANKS, MultiLoraConfig, setting
from paramem.errors import InputError, check_option
from paramem.files import write_atomic
from paramem.memory.milp.model import (
    placement,
)

FACTORS = ("loras", "layers", "rank")


@dataclass
class SearchSpace:
    """What the search may choose; checked against the model's depth before any training."""

    depth: int = setting(24, "the model's number of layers")
    max_loras: int | None = setting(None, "the largest n (None: the model's depth, as the paper's 0-32)")
    ranks: list[int] = setting(list(MILP_RANKS), "the ranks r to choose from")
    candidate_layers: list[int] | None = setting(None, "the layers a mask may choose (None: all)")
    block_size: int = setting(4, "consecutive candidate layers switched on and off together")
    factors: list[str] = setting(list(FACTORS), "what is searched: loras, layers, rank (the rest fixed)")
    fixed: MultiLoraConfig = field(default_factory=MultiLoraConfig)  # the value of each factor not searched

    def __post_init__(self):
        check_option(self.depth >= 1, "depth", "at least 1", self.depth)
        if self.max_loras is None:
            self.max_loras = self.depth
        check_option(self.max_loras >= 1, "max_loras", "at least 1", self.max_loras)
        check_option(bool(self.ranks), "ranks", "at least one rank", self.ranks)
        check_option(all(r >= 1 for r in self.ranks), "ranks", "ranks of 1 or more", self.ranks)
        self.ranks = sorted(set(self.ranks))
        layers = self.candidate_layers if self.candidate_layers is not None else list(range(self.depth))
        check_option(bool(layers), "candidate_layers", "at least one layer", layers)
        check_option(
            all(0 <= layer < self.depth for layer in layers),
            "candidate_layers",
            f"layer indices from 0 to {self.depth - 1} (the model's depth is {self.depth})",
            layers,
        )
        self.candidate_layers = sorted(set(layers))
        check_option(self.block_size >= 1, "block_size", "at least 1", self.block_size)
        check_option(
            bool(self.factors) and set(self.factors) <= set(FACTORS),
            "factors",
            f"one or more of {', '.join(FACTORS)}",
            self.factors,
        )
        self.fixed.check_depth(self.depth)

    @property
    def blocks(self) -> list[list[int]]:
        layers = self.candidate_layers
        return [layers[i : i + self.block_size] for i in range(0, len(layers), self.block_size)]

    @property
    def dimensions(self) -> int:
        return ("loras" in self.factors) + ("rank" in self.factors) + len(self.blocks) * ("layers" in self.factors)

    def decode(self, x: list[float]) -> MultiLoraConfig:
        """The configuration at point `x` of [0, 1]^dimensions."""
        x = list(x)
        loras, rank, layers = self.fixed.loras, self.fixed.rank, self.fixed.layers
        if "loras" in self.factors:
            loras = round(x.pop(0) * self.max_loras)
        if "rank" in self.factors:
            rank = self.ranks[min(int(x.pop(0) * len(self.ranks)), len(self.ranks) - 1)]
        if "layers" in self.factors:
            switches = x[: len(self.blocks)]
            if not any(s >= 0.5 for s in switches):  # an empty mask holds nothing: keep the likeliest block
                switches = [1.0 if i == switches.index(max(switches)) else 0.0 for i in range(len(switches))]
            layers = [layer for s, block in zip(switches, self.blocks) if s >= 0.5 for layer in block]
        if loras == 0:  # no LoRA: every mask and rank is the same base model, one configuration
            return self.no_memory
        return MultiLoraConfig(loras=loras, layers=layers, rank=rank, scale=self.fixed.scale)

    @property
    def no_memory(self) -> MultiLoraConfig:
        """The base model as a configuration (trial 0, the reference point)."""
        return MultiLoraConfig(loras=0, layers=None, rank=self.ranks[0], scale=self.fixed.scale)

    def encode(self, config: MultiLoraConfig) -> list[float]:
        """The canonical point of a configuration (what the surrogate is trained on)."""
        x = []
        if "loras" in self.factors:
            x.append(config.loras / self.max_loras)
        if "rank" in self.factors:
            x.append((self.ranks.index(config.rank) + 0.5) / len(self.ranks))
        if "layers" in self.factors:
            chosen = set(config.layers if config.layers is not None else range(self.depth))
            x += [1.0 if chosen & set(block) else 0.0 for block in self.blocks]
        return x

    def random_config(self, rng: random.Random) -> MultiLoraConfig:
        return self.decode([rng.random() for _ in range(self.dimensions)])


@dataclass
class Trial:
    number: int
    kind: str  # "base" (trial 0, the reference), "random" or "bo"
    config: dict  # MultiLoraConfig's fields
    loss: float  # validation cross-entropy (lower is better)
    rouge_l: float  # of generated replies (higher is better)
    seconds: float
    hypervolume: float = 0.0  # of all trials up to this one

    @property
    def memory(self) -> MultiLoraConfig:
        return MultiLoraConfig(**self.config)


@dataclass
class Objectives:
    loss: float
    rouge_l: float


Evaluate = Callable[[MultiLoraConfig], Objectives]


def read_trials(path: Path) -> list[Trial]:
    """The trials saved so far; a last line cut short by an interruption is ignored."""
    if not path.exists():
        return []
    trials = []
    lines = path.read_text(encoding="utf-8").split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            trials.append(Trial(**json.loads(line)))
        except (ValueError, TypeError) as error:
            if number >= len(lines) - 1:  # the line being written when the search was stopped
                break
            raise InputError(f"not a saved trial ({error}); remove the file to search again", path, number) from None
    return trials


def _objectives(trials: list[Trial]) -> torch.Tensor:
    """The maximised objectives: (-loss, ROUGE-L)."""
    return torch.tensor([[-t.loss, t.rouge_l] for t in trials], dtype=torch.double)


def reference_point(trials: list[Trial]) -> torch.Tensor:
    return torch.tensor([-trials[0].loss, 0.0], dtype=torch.double)


def pareto_front(trials: list[Trial]) -> list[Trial]:
    """The trials no other trial beats on both objectives, by loss."""
    from botorch.utils.multi_objective.pareto import is_non_dominated

    keep = is_non_dominated(_objectives(trials)).tolist()
    return sorted((t for t, k in zip(trials, keep) if k), key=lambda t: t.loss)


def hypervolume(trials: list[Trial]) -> float:
    """The area dominated by the trials' Pareto front and bounded by the reference point."""
    from botorch.utils.multi_objective.hypervolume import Hypervolume

    front = _objectives(pareto_front(trials))
    reference = reference_point(trials)
    front = front[(front > reference).all(dim=-1)]
    return float(Hypervolume(reference).compute(front)) if len(front) else 0.0


def choose(trials: list[Trial]) -> Trial:
    """The configuration given to the user: on the Pareto front, the best ROUGE-L (replies are the
    goal), lower loss breaking ties. Fixed before any search ran."""
    return max(pareto_front(trials), key=lambda t: (t.rouge_l, -t.loss))


def _tried(space: SearchSpace, trials: list[Trial]) -> list[Trial]:
    """The trials that are points of the searched space. With n fixed, the base model (n = 0) would sit
    at the same point as the configurations it differs from only in n (r = 8 in a rank search): it
    stays the reference point but is no data for the surrogate and does not make that point tried."""
    return [t for t in trials if t.kind != "base" or "loras" in space.factors]


def propose(space: SearchSpace, trials: list[Trial], seed: int, candidates: int = 512) -> MultiLoraConfig | None:
    """The next configuration by qLogNEHVI on SAAS GPs of the trials so far, among configurations not
    tried yet; None when random draws find none left (a small space, such as the rank alone)."""
    from botorch.acquisition.multi_objective.logei import qLogNoisyExpectedHypervolumeImprovement
    from botorch.fit import fit_fully_bayesian_model_nuts
    from botorch.models import ModelListGP
    from botorch.models.fully_bayesian import SaasFullyBayesianSingleTaskGP
    from botorch.models.transforms.outcome import Standardize
    from botorch.optim import optimize_acqf_discrete

    fitted = _tried(space, trials)
    tried = {json.dumps(space.encode(t.memory)) for t in fitted}
    rng = random.Random(seed * 7919 + len(trials))
    pool: dict[str, list[float]] = {}
    for _ in range(candidates * 4):
        point = space.encode(space.random_config(rng))
        key = json.dumps(point)
        if key not in tried:
            pool[key] = point
        if len(pool) >= candidates:
            break
    if not pool:  # every configuration has been tried: another trial would only repeat one
        return None
    torch.manual_seed(seed + len(trials))
    X = torch.tensor([space.encode(t.memory) for t in fitted], dtype=torch.double)
    Y = _objectives(fitted)
    models = []
    for column in range(Y.shape[1]):
        model = SaasFullyBayesianSingleTaskGP(X, Y[:, column : column + 1], outcome_transform=Standardize(m=1))
        fit_fully_bayesian_model_nuts(model, warmup_steps=128, num_samples=64, thinning=8, disable_progbar=True)
        models.append(model)
    acquisition = qLogNoisyExpectedHypervolumeImprovement(
        model=ModelListGP(*models), ref_point=reference_point(trials).tolist(), X_baseline=X, prune_baseline=True
    )
    choices = torch.tensor(list(pool.values()), dtype=torch.double)
    best, _ = optimize_acqf_discrete(acquisition, q=1, choices=choices)
    return space.decode(best[0].tolist())


@dataclass
class SearchConfig:
    initial_trials: int = setting(8, "random configurations tried after the base model (the paper: 100)")
    bo_trials: int = setting(8, "configurations proposed by Bayesian optimisation after those")
    seed: int = setting(0, "seed of the random configurations and the surrogate's sampler")

    def __post_init__(self):
        check_option(self.initial_trials >= 2, "initial_trials", "at least 2 (a GP needs points)", self.initial_trials)
        check_option(self.bo_trials >= 0, "bo_trials", "0 or more", self.bo_trials)


def search(
    space: SearchSpace,
    evaluate: Evaluate,
    folder: Path,
    config: SearchConfig | None = None,
    on_trial: Callable[[Trial], None] | None = None,
) -> list[Trial]:
    """Run (or resume) the search, saving each trial to `folder/trials.jsonl` as it finishes; then
    write the Pareto front (`pareto.json`, `pareto.png`). Returns every trial."""
    config = config or SearchConfig()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "trials.jsonl"
    trials = read_trials(path)
    randoms = initial_configs(space, config)  # the same on every rerun
    while len(trials) < trials_to_run(config):
        number = len(trials)
        if number == 0:
            kind, memory = "base", space.no_memory
        elif number <= len(randoms):
            kind, memory = "random", randoms[number - 1]
        else:
            kind, memory = "bo", propose(space, trials, config.seed)
            if memory is None:  # the budget is larger than the space
                break
        start = time.perf_counter()
        scores = evaluate(memory)
        trial = Trial(number, kind, asdict(memory), scores.loss, scores.rouge_l, time.perf_counter() - start)
        trial.hypervolume = hypervolume([*trials, trial])
        with open(path, "a", encoding="utf-8") as file:
            file.write(json.dumps(asdict(trial)) + "\n")
            file.flush()
        trials.append(trial)
        if on_trial is not None:
            on_trial(trial)
    write_front(trials, folder)
    return trials


def initial_configs(space: SearchSpace, config: SearchConfig) -> list[MultiLoraConfig]:
    """The random configurations, drawn from `config.seed`: distinct from each other and from the base
    model, so that no trial repeats another (fewer when the space holds fewer)."""
    rng = random.Random(config.seed)
    seen = {json.dumps(space.encode(space.no_memory))} if "loras" in space.factors else set()
    configs: list[MultiLoraConfig] = []
    for _ in range(50 * config.initial_trials):  # a bound: a small space runs out of new points
        if len(configs) == config.initial_trials:
            break
        memory = space.random_config(rng)
        key = json.dumps(space.encode(memory))
        if key not in seen:
            seen.add(key)
            configs.append(memory)
    return configs


def write_front(trials: list[Trial], folder: Path) -> None:
    """pareto.json (the front, the chosen trial, hypervolume per trial) and pareto.png."""

    front, chosen = pareto_front(trials), choose(trials)
    summary = {
        "front": [asdict(t) for t in front],
        "chosen": asdict(chosen),
        "hypervolume": [t.hypervolume for t in trials],
        "reference_point": {"loss": trials[0].loss, "rouge_l": 0.0},
    }
    write_atomic(folder / "pareto.json", json.dumps(summary, indent=2))
    plot(trials, folder / "pareto.png")


def plot(trials: list[Trial], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    front, chosen = pareto_front(trials), choose(trials)
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for kind, marker in (("base", "s"), ("random", "o"), ("bo", "^")):
        shown = [t for t in trials if t.kind == kind]
        left.scatter([t.loss for t in shown], [t.rouge_l for t in shown], marker=marker, label=kind, alpha=0.7)
    left.plot([t.loss for t in front], [t.rouge_l for t in front], "k--", linewidth=1, label="Pareto front")
    left.scatter([chosen.loss], [chosen.rouge_l], s=160, facecolors="none", edgecolors="red", label="chosen")
    left.set_xlabel("validation cross-entropy (lower is better)")
    left.set_ylabel("ROUGE-L of replies (higher is better)")
    left.legend(fontsize=8)
    right.plot([t.number for t in trials], [t.hypervolume for t in trials], marker=".")
    right.set_xlabel("trial")
    right.set_ylabel("hypervolume")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def trials_to_run(config: SearchConfig) -> int:
    return 1 + config.initial_trials + config.bo_trials


def describe(memory: MultiLoraConfig, depth: int) -> str:
    """'n=6 r=16 mask 0-3,8-11 (6 LoRAs on 6 layers)' for tables and logs."""

    held = placement(memory, depth)
    layers = memory.layers if memory.layers is not None else list(range(depth))
    runs, start = [], layers[0]
    for previous, layer in zip(layers, [*layers[1:], math.inf]):
        if layer != previous + 1:
            runs.append(f"{start}-{previous}" if previous > start else f"{start}")
            start = layer
    loras = f"{memory.loras} LoRA{'s' * (memory.loras != 1)}"
    layers_held = f"{len(held)} layer{'s' * (len(held) != 1)}"
    return f"n={memory.loras} r={memory.rank} mask {','.join(runs)} ({loras} on {layers_held})"
