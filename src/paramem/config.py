"""Every setting of paramem in one tree, each field carrying its meaning and checked once:

    RememberConfig          one user's learning run (remember.py)
      TrainConfig           learning one conversation (train.py)
        PairConfig          which question/answer pairs, how many (augment/pairs.py)
    RecallConfig            the recall readout (recall.py)

A field's `help` is the text of its command-line option: the CLI reads defaults and help from here
(`option_help`, `option_default`), so they are written once. A bad value raises `InputError` from the
dataclass itself, for the CLI (one line, exit 2) and the Python API alike. This module imports no
model code, so `paramem --help` stays fast.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from enum import StrEnum
from typing import Any

from paramem.errors import InputError, check_option

# The cosine similarity above which a question counts as recalled. Fitted on the development samples'
# probes (LoCoMo 0-3) matched against their own conversation text (benchmarks/recall_threshold.py),
# never on the report samples (4-7: 0.750 there, yes 0.59 / no 0.91) nor on the demo set.
RECALL_THRESHOLD = 0.525
DEFAULT_MODEL = "qwen2.5-0.5b"  # the embedded default (docs/usage.md, "Choosing the default base model")
# transformers' repetition penalty on greedy replies (the logits of tokens already in the prompt or
# the reply divided by it). None by default: on MSC development episodes (benchmarks/reply_decoding.py)
# unpenalised replies repeated a 4-word run in 1 of 90, and 1.1 or 1.2 lowered Persona-F1 and ROUGE-L.
REPLY_REPETITION_PENALTY = 1.0


class Form(StrEnum):
    """What a user's memory is made of."""

    SEQUENTIAL = "sequential"  # one LoRA adapter, learned conversation after conversation
    CARTRIDGE = "cartridge"  # one key/value prefix per conversation, composed at answer time


class Objective(StrEnum):
    """What a memory learns from a conversation."""

    PLUM = "plum"  # the teacher's template answers, under PLUM's weighted cross-entropy
    DISTILL = "distill"  # the base model's own answers with the conversation in its prompt, under KL


class KeepText(StrEnum):
    """How long a user's conversations stay in the store as text (`--keep-text`)."""

    ALWAYS = "always"  # retrieval reads them beside the memory: the best answers measured
    UNTIL_CONSOLIDATED = "until-consolidated"  # PLUM's promise: discarded once learned into the memory
    NEVER = "never"  # never written: answerable only once consolidated


def _choice(kind: type[StrEnum], value, name: str) -> StrEnum:
    """`value` as a member of `kind`; one line naming the choices if it is none of them."""
    try:
        return kind(value)
    except ValueError:
        check_option(False, name, " or ".join(kind), value)


DTYPE_NAMES = ("float32", "bfloat16")  # the dtypes paramem computes in (model/compute.py chooses one)
DTYPE_ALIASES = {"fp32": "float32", "f32": "float32", "bf16": "bfloat16"}


def dtype_name(text: str) -> str:
    """A dtype's canonical name ("bf16" -> "bfloat16"); `InputError` for anything else."""
    name = DTYPE_ALIASES.get(text.strip().lower(), text.strip().lower())
    if name not in DTYPE_NAMES:
        raise InputError(f"unknown dtype {text!r} (float32 or bfloat16)")
    return name


def setting(default: Any, help: str, **kwargs) -> Any:
    """A config field with its help text (as peft's dataclass fields carry `metadata={"help": ...}`)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help}, **kwargs)
    return field(default=default, metadata={"help": help}, **kwargs)


def option_help(config: type, name: str) -> str:
    return {f.name: f for f in fields(config)}[name].metadata["help"]


def option_default(config: type, name: str) -> Any:
    found = {f.name: f for f in fields(config)}[name]
    return found.default_factory() if found.default is MISSING else found.default


@dataclass
class PairConfig:
    """How many pairs of which kind to draw per conversation and epoch."""

    negative_ratio: float = setting(1.0, "negatives per positive question (1.0 = PLUM's 1:1 balance)")
    questions_per_wording: int = setting(1, "closed questions drawn per topic wording and epoch")
    fact_questions: bool = setting(True, "closed questions about atomic facts (needs the teacher's false facts)")
    open_questions: bool = setting(True, "open questions whose answers restate the content")
    statements: bool = setting(True, "statements 'On <date> we talked about <topic>' and its reverse")
    recall: bool = setting(
        True,
        "the recall cue 'What did we talk about on <date>?' answered with the whole conversation in a "
        "few sentences: what the recall readout asks at answer time",
    )
    max_pairs: int | None = setting(
        None,
        "at most this many pairs per conversation and epoch, each kind keeping its share (None: all the "
        "notes give; PLUM trains about 20); the recall pair is never capped away",
    )
    seed: int = setting(0, "seed of the template draws")

    def __post_init__(self):
        check_option(self.negative_ratio >= 0, "negative_ratio (--negative-ratio)", "0 or more", self.negative_ratio)
        check_option(self.questions_per_wording >= 1, "questions_per_wording", "at least 1", self.questions_per_wording)
        check_option(self.max_pairs is None or self.max_pairs >= 1, "max_pairs", "at least 1", self.max_pairs)


@dataclass
class TrainConfig:
    """Every knob of learning a conversation, with PLUM's values as defaults where PLUM has one."""

    lora_rank: int = setting(16, "r of every LoRA matrix (PLUM: 16)")
    lora_alpha: int = setting(64, "LoRA scaling numerator, update = alpha / r * BA (PLUM: 64)")
    lora_dropout: float = setting(0.0, "dropout on the LoRA input")
    target_modules: str | list[str] = setting("all-linear", "peft module names; all-linear: every linear but the head")
    layers: list[int] | None = setting(None, "only these transformer layers carry LoRA (None: all)")
    qa_weight: float = setting(10.0, "PLUM's lambda: loss weight of question and answer tokens")
    template_weight: float = setting(1.0, "loss weight of instruction and chat-template tokens")
    statement_weight: float = setting(1.0, "loss weight of plain statements about a conversation")
    epochs: int = setting(10, "most epochs per conversation; the best held-out epoch is kept (PLUM: 10)")
    min_epochs: int = setting(2, "never stop before this many epochs")
    early_stopping: bool = setting(True, "keep the epoch best on held-out reworded pairs; stop on a plateau")
    patience: int = setting(3, "epochs without held-out improvement before stopping")
    learning_rate: float = setting(5e-4, "learning rate")
    learning_rates: list[float] | None = setting(
        None,
        "learn each conversation at each of these rates from the same adapter and keep the run best on "
        "held-out reworded pairs (one run per rate)",
    )
    weight_decay: float = setting(0.0, "AdamW weight decay")
    batch_size: int = setting(8, "examples per optimizer step")
    replay_share: float = setting(0.3, "share of each epoch's pairs replayed from earlier conversations")
    replayed_cues: int = setting(
        8,
        "earlier conversations' recall cues replayed per epoch: all up to this many, beyond that this many "
        "in rotation, so an epoch costs the same however long the history",
    )
    max_length: int = setting(256, "longest training example in tokens (longer ones are cut)")
    # On a 2-core CPU, for examples of ~40 tokens, eager trains ~30% faster than sdpa, whose backward
    # pass dominates (benchmarks/train_speed.py).
    attention: str = setting("eager", "attention kernel while learning: eager or sdpa")
    # bf16 LoRA steps were ~15% faster in isolation but a whole conversation was not, and held-out
    # accuracy dropped (benchmarks/train_speed.py, variant paramem-fast), so float32 stays.
    adapter_float32: bool = setting(True, "LoRA weights in float32 (exact optimizer updates), else the base dtype")
    seed: int = setting(0, "seed of batching and replay draws")
    objective: Objective = setting(
        Objective.PLUM,
        "plum: PLUM's weighted cross-entropy on the teacher's template answers; distill: KL to the base "
        "model's own answers with the conversation in its prompt (distill.py)",
    )
    distill_queries: int = setting(24, "distill: queries the teacher answers per conversation (the main cost)")
    self_study_queries: int = setting(
        8, "distill: of those queries, up to how many the teacher writes itself from seed prompts (self-study)"
    )
    # 32 checks lifted the memory from 0.438 to 0.688 accuracy (AUC 0.383 -> 0.627) on development
    # sample 1 (docs/experiments.md, session 14); chosen there, never on the report samples.
    distill_checks: int = setting(
        32,
        "distill: yes/no checks per conversation beside the queries: facts and near misses the teacher "
        "writes from single turns, its first answer token kept (distill.py; 0: none)",
    )
    distill_check_weight: float = setting(8.0, "distill: a check's one answer token counts as this many")
    distill_top_k: int = setting(20, "distill: teacher log-probabilities kept per answer token")
    distill_answer_tokens: int = setting(32, "distill: longest teacher answer, in tokens")
    # Deep context distillation (knowledge modules, arXiv 2503.08727) matches the teacher's hidden
    # states as well as its output distribution. Off until a measurement says otherwise.
    distill_hidden_weight: float = setting(
        0.0,
        "distill: weight of matching the teacher's hidden states at every answer position, beside the "
        "KL (normalised L1 distance, distill.py; 0: the KL alone; sequential form only)",
    )
    distill_hidden_layers: int = setting(
        4, "distill: how many layers' hidden states are matched, spread evenly over the depth, the last included"
    )
    form: Form = setting(
        Form.SEQUENTIAL,
        "sequential: one LoRA adapter learned conversation after conversation; cartridge: a key/value "
        "prefix learned per conversation and composed at answer time, so forgetting one is exact "
        "(cartridge.py; objective distill only)",
    )
    cartridge_fraction: float = setting(0.125, "cartridge: its length as a fraction of the conversation's tokens")
    cartridge_min_tokens: int = setting(16, "cartridge: the shortest cartridge, in tokens")
    # Keys and values are activations, not weights: the Cartridges paper trains them at 2e-2.
    cartridge_learning_rate: float = setting(2e-2, "cartridge: learning rate of the keys and values")
    pairs: PairConfig = field(default_factory=PairConfig)

    def __post_init__(self):
        check_option(self.lora_rank >= 1, "lora_rank", "at least 1", self.lora_rank)
        check_option(self.lora_alpha > 0, "lora_alpha", "above 0", self.lora_alpha)
        check_option(0 <= self.lora_dropout < 1, "lora_dropout", "in [0, 1)", self.lora_dropout)
        # lambda <= 0 would silently drop (or push away) the question and answer tokens
        check_option(self.qa_weight > 0, "qa_weight (--lambda)", "above 0", self.qa_weight)
        check_option(self.template_weight >= 0, "template_weight", "0 or more", self.template_weight)
        check_option(self.statement_weight >= 0, "statement_weight", "0 or more", self.statement_weight)
        check_option(self.epochs >= 1, "epochs (--epochs)", "at least 1", self.epochs)
        check_option(self.min_epochs >= 1, "min_epochs", "at least 1", self.min_epochs)
        check_option(self.patience >= 1, "patience", "at least 1", self.patience)
        rates = [self.learning_rate, *(self.learning_rates or [])]
        check_option(all(rate > 0 for rate in rates), "learning rate (--lr)", "above 0", rates)
        check_option(self.weight_decay >= 0, "weight_decay", "0 or more", self.weight_decay)
        check_option(self.batch_size >= 1, "batch_size", "at least 1", self.batch_size)
        # replay r of an epoch means r / (1 - r) earlier pairs per new one: r = 1 is all replay
        check_option(0 <= self.replay_share < 1, "replay_share (--replay)", "in [0, 1)", self.replay_share)
        check_option(self.replayed_cues >= 0, "replayed_cues (--replayed-cues)", "0 or more", self.replayed_cues)
        check_option(self.max_length >= 16, "max_length", "at least 16 tokens", self.max_length)
        check_option(self.attention in ("eager", "sdpa"), "attention", "eager or sdpa", self.attention)
        self.objective = _choice(Objective, self.objective, "objective (--objective)")
        check_option(
            self.distill_queries >= 1, "distill_queries (--distill-queries)", "at least 1", self.distill_queries
        )
        check_option(
            self.self_study_queries >= 0,
            "self_study_queries (--self-study-queries)",
            "0 or more",
            self.self_study_queries,
        )
        check_option(self.distill_checks >= 0, "distill_checks (--distill-checks)", "0 or more", self.distill_checks)
        check_option(self.distill_check_weight > 0, "distill_check_weight", "above 0", self.distill_check_weight)
        check_option(self.distill_top_k >= 1, "distill_top_k", "at least 1", self.distill_top_k)
        check_option(self.distill_answer_tokens >= 1, "distill_answer_tokens", "at least 1", self.distill_answer_tokens)
        check_option(
            self.distill_hidden_weight >= 0,
            "distill_hidden_weight (--distill-hidden-weight)",
            "0 or more",
            self.distill_hidden_weight,
        )
        check_option(self.distill_hidden_layers >= 1, "distill_hidden_layers", "at least 1", self.distill_hidden_layers)
        self.form = _choice(Form, self.form, "form (--form)")
        check_option(
            self.distill_hidden_weight == 0 or self.form == Form.SEQUENTIAL,
            "distill_hidden_weight (--distill-hidden-weight)",
            "0 for the cartridge form (its hidden states are not matched)",
            self.distill_hidden_weight,
        )
        check_option(
            self.form == Form.SEQUENTIAL or self.objective == Objective.DISTILL,
            "objective (--objective)",
            "distill for the cartridge form (a cartridge learns only by distillation)",
            self.objective,
        )
        check_option(0 < self.cartridge_fraction <= 1, "cartridge_fraction", "in (0, 1]", self.cartridge_fraction)
        check_option(self.cartridge_min_tokens >= 1, "cartridge_min_tokens", "at least 1", self.cartridge_min_tokens)
        check_option(
            self.cartridge_learning_rate > 0, "cartridge_learning_rate", "above 0", self.cartridge_learning_rate
        )
        check_option(
            not (self.learning_rates and not self.early_stopping),
            "early_stopping",
            "on to choose among learning_rates (held-out accuracy decides)",
            self.early_stopping,
        )

    def rates(self) -> list[float]:
        """The learning rates each conversation is learned at (the best held-out run is kept)."""
        if self.form == Form.CARTRIDGE:
            return [self.cartridge_learning_rate]
        return self.learning_rates or [self.learning_rate]


@dataclass
class RememberConfig:
    """One user's learning run: which base model, what is kept, and how each conversation is learned."""

    base_model: str = setting(DEFAULT_MODEL, "preset, HF folder or id, GGUF file, or tiny (tests)")
    keep_text: KeepText = setting(
        KeepText.ALWAYS,
        "always: each conversation is indexed for retrieval as it arrives and kept; until-consolidated: "
        "indexed, then deleted once learned into the memory; never: not stored, answerable once learned",
    )
    regenerate_notes: bool = setting(False, "ask the teacher again even when its notes are cached")
    notes_cache: bool = setting(
        True,
        "keep the teacher's notes in $PARAMEM_CACHE/teacher (keyed by content, shared by users) for reruns",
    )
    dtype: str | None = setting(
        None,
        "float32 or bfloat16 (default: $PARAMEM_DTYPE, else what the memory was learned in, else the faster "
        "one measured on this CPU); recorded in the memory's settings",
    )
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self):
        self.keep_text = _choice(KeepText, self.keep_text, "keep_text (--keep-text)")
        check_option(
            self.keep_text == KeepText.ALWAYS
            or not (self.train.form == Form.SEQUENTIAL and self.train.objective == Objective.DISTILL),
            "keep_text (--keep-text)",
            "always for a sequential distilled memory (replay and forget relearn it from the teacher's stored "
            "answers, which would outlive the text; --objective plum drops them)",
            self.keep_text.value,
        )
        if self.dtype is not None:
            self.dtype = dtype_name(self.dtype)


@dataclass
class RecallConfig:
    """The recall readout (recall.py)."""

    max_new_tokens: int = setting(48, "the longest recollection per branch, in tokens (topics and first facts)")
    threshold: float = setting(RECALL_THRESHOLD, "similarity above which a question counts as recalled")
    batch_size: int = setting(64, "sequences generated side by side (one batch for 8 conversations x 8 branches)")
    # The memory holds every conversation's recollection (teacher-forced, each is likeliest under its
    # own date), but the date binds only weakly to the first topic word: greedy decoding, or a beam,
    # commits to the newest conversation's first topic and follows that chain. Branching on the
    # likeliest first words, then continuing greedily, follows several chains.
    branches: int = setting(8, "recollections per cue, each from a different likeliest first word")
    # Greedy decoding of a small model falls into loops ("cafe, cafe, cafe, ..."). Long, because the
    # prompt counts too: the cue's date (~8 tokens) must be free to come back.
    no_repeat_ngram_size: int = setting(12, "no phrase of this many tokens may repeat in a recollection")

    def __post_init__(self):
        check_option(self.max_new_tokens >= 1, "max_new_tokens", "at least 1", self.max_new_tokens)
        check_option(-1 <= self.threshold <= 1, "threshold", "a cosine similarity in [-1, 1]", self.threshold)
        check_option(self.batch_size >= 1, "batch_size", "at least 1", self.batch_size)
        check_option(self.branches >= 1, "branches", "at least 1", self.branches)
        check_option(self.no_repeat_ngram_size >= 0, "no_repeat_ngram_size", "0 or more", self.no_repeat_ngram_size)


# MiLP's rank choices (the paper's Table 6)
MILP_RANKS = (8, 16, 32, 64, 96)


@dataclass
class MultiLoraConfig:
    """MiLP's memory: n LoRAs of rank r on the feed-forward blocks of chosen layers (milp.py maps it to
    one peft LoRA). The three searched quantities of the paper: n, the layer mask and r."""

    loras: int = setting(8, "n: how many rank-r LoRAs, spread evenly over the chosen layers (0: no memory)")
    layers: list[int] | None = setting(None, "the layer mask as the chosen layer indices (None: every layer)")
    rank: int = setting(16, "r of each LoRA (the paper searched 8, 16, 32, 64, 96)")
    scale: float = setting(2.0, "alpha / r of each LoRA: how strongly its update adds to the layer")

    def __post_init__(self):
        check_option(self.loras >= 0, "loras (n)", "0 or more", self.loras)
        check_option(self.rank >= 1, "rank (r)", "at least 1", self.rank)
        check_option(self.scale > 0, "scale", "above 0", self.scale)
        if self.layers is not None:
            self.layers = sorted(set(self.layers))
            check_option(bool(self.layers), "layers", "at least one layer (an empty mask holds no memory)", [])
            check_option(min(self.layers) >= 0, "layers", "layer indices of 0 or more", self.layers)

    def check_depth(self, depth: int) -> None:
        """A layer index past the model's depth is bad input, found before any training."""
        if self.layers is not None:
            check_option(max(self.layers) < depth, "layers", f"below the model's depth {depth}", self.layers)


@dataclass
class MiLPTrainConfig:
    """How a MiLP memory is learned from a user's history: memory injection, then instruction tuning.

    The optimizer follows the paper (AdamW, 5e-4, linear warm-up over 10% of the steps, weight decay
    1e-4); epochs and batch size are smaller, for a CPU."""

    memory_injection: bool = setting(True, "stage 1: learn the history's text (every token) into the LoRAs")
    instruction_tuning: bool = setting(
        True, "stage 2: learn to reply as the assistant did, given the dialogue so far (reply tokens only)"
    )
    # A search trial learns each development user with these: on 2 cores, 0.5B float32, an MSC user
    # (sessions 1-2) then takes about 80 s.
    memory_epochs: int = setting(1, "epochs of stage 1")
    instruction_epochs: int = setting(2, "epochs of stage 2")
    learning_rate: float = setting(5e-4, "AdamW learning rate (MiLP: 5e-4)")
    warmup_share: float = setting(0.1, "share of the steps with a linearly rising learning rate (MiLP: 10%)")
    weight_decay: float = setting(1e-4, "AdamW weight decay (MiLP: 1e-4)")
    batch_size: int = setting(4, "examples per optimizer step")
    max_length: int = setting(384, "longest training example in tokens (the dialogue so far is cut from the left)")
    context_turns: int = setting(4, "turns of the current dialogue shown before each reply")
    max_new_tokens: int = setting(40, "longest generated reply, in tokens")
    repetition_penalty: float = setting(
        REPLY_REPETITION_PENALTY, "penalty on tokens already in the prompt or the reply (1 = none)"
    )
    seed: int = setting(0, "seed of LoRA initialisation and batching")

    def __post_init__(self):
        check_option(self.memory_epochs >= 0, "memory_epochs", "0 or more", self.memory_epochs)
        check_option(self.instruction_epochs >= 0, "instruction_epochs", "0 or more", self.instruction_epochs)
        check_option(self.learning_rate > 0, "learning_rate", "above 0", self.learning_rate)
        check_option(0 <= self.warmup_share < 1, "warmup_share", "in [0, 1)", self.warmup_share)
        check_option(self.weight_decay >= 0, "weight_decay", "0 or more", self.weight_decay)
        check_option(self.batch_size >= 1, "batch_size", "at least 1", self.batch_size)
        check_option(self.max_length >= 32, "max_length", "at least 32 tokens", self.max_length)
        check_option(self.context_turns >= 1, "context_turns", "at least 1", self.context_turns)
        check_option(self.max_new_tokens >= 1, "max_new_tokens", "at least 1", self.max_new_tokens)
        check_option(self.repetition_penalty > 0, "repetition_penalty", "above 0", self.repetition_penalty)
