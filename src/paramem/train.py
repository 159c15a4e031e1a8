"""Train: PLUM's weighted cross-entropy and the sequential, conversation-by-conversation trainer."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from paramem.augment.notes import Notes
from paramem.augment.pairs import PairConfig, QAPair, training_pairs, validation_pairs
from paramem.errors import check_option
from paramem.models import decoder_and_head
from paramem.prompts import Encoded, encode_example, encode_statement
from paramem.readers import LogOddsReader, Reader


@dataclass
class TrainConfig:
    """Every knob of learning a conversation, with PLUM's values as defaults where PLUM has one."""

    lora_rank: int = 16  # r of every LoRA matrix (PLUM: 16)
    lora_alpha: int = 64  # LoRA scaling numerator, update = alpha / r * BA (PLUM: 64)
    lora_dropout: float = 0.0
    target_modules: str | list[str] = "all-linear"  # peft names; "all-linear" = every linear but the head
    layers: list[int] | None = None  # only these transformer layers carry LoRA (None = all)
    qa_weight: float = 10.0  # PLUM's lambda: loss weight of question and answer tokens
    template_weight: float = 1.0  # loss weight of instruction and chat-template tokens
    statement_weight: float = 1.0  # loss weight of plain statements about a conversation
    epochs: int = 10  # most epochs per conversation (PLUM: 10)
    min_epochs: int = 2  # never stop before this many epochs
    early_stopping: bool = True  # keep the epoch with the best held-out reworded accuracy; stop on a plateau
    patience: int = 3  # epochs without held-out improvement before stopping
    learning_rate: float = 5e-4
    # When given, each conversation is learned once at every rate here, from the same starting
    # adapter, and the run with the best held-out reworded accuracy is kept (costs one run per rate).
    learning_rates: list[float] | None = None
    weight_decay: float = 0.0
    batch_size: int = 8
    replay_share: float = 0.3  # share of each epoch's pairs drawn from earlier conversations
    # Earlier conversations' recall cues replayed per epoch: all of them up to this many, beyond that
    # this many in rotation, so the cost of an epoch stays flat as the history grows.
    replayed_cues: int = 8
    max_length: int = 256  # longest training example in tokens (longer ones are cut)
    # Attention kernel while learning. On this CPU, for examples of ~40 tokens, "eager" trains ~30%
    # faster than "sdpa", whose backward pass dominates (benchmarks/train_speed.py).
    attention: str = "eager"
    # LoRA weights in float32 (exact optimizer updates) or, when False, in the base model's bf16.
    # bf16 steps were ~15% faster in isolation but a whole conversation was not, and held-out
    # accuracy dropped (benchmarks/train_speed.py, variant paramem-fast), so float32 stays.
    adapter_float32: bool = True
    seed: int = 0
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
        check_option(self.replayed_cues >= 0, "replayed_cues", "0 or more", self.replayed_cues)
        check_option(self.max_length >= 16, "max_length", "at least 16 tokens", self.max_length)
        check_option(self.attention in ("eager", "sdpa"), "attention", "eager or sdpa", self.attention)
        check_option(
            not (self.learning_rates and not self.early_stopping),
            "early_stopping",
            "on to choose among learning_rates (held-out accuracy decides)",
            self.early_stopping,
        )

    def lora_config(self, model: torch.nn.Module | None = None) -> LoraConfig:
        targets = self.target_modules
        if self.layers is not None and targets == "all-linear":
            # peft accepts a layer choice only with explicit module names
            if model is None:
                raise ValueError("naming the linear modules of chosen layers needs the model")
            targets = linear_module_names(model)
        return LoraConfig(
            r=self.lora_rank,
            lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout,
            target_modules=targets,
            layers_to_transform=self.layers,
            task_type="CAUSAL_LM",
        )


def linear_module_names(model: torch.nn.Module) -> list[str]:
    """Short names of the linear layers inside the transformer blocks ("q_proj", ..., not the head)."""
    _, head = decoder_and_head(model)
    return sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and module is not head
        }
    )


def weighted_cross_entropy(logits: torch.Tensor, input_ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """PLUM's loss: sum over tokens of weight x CE(next token), divided by the number of trained tokens.

    `weights[b, i]` is the weight of predicting token i from tokens < i; padding has weight 0. Dividing
    by a count rather than by the weight sum keeps lambda a true multiplier: a token of weight lambda
    contributes exactly lambda times the gradient of a token of weight 1.
    """
    logits = logits[:, :-1].float()
    targets = input_ids[:, 1:]
    token_weights = weights[:, 1:]
    losses = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)), targets.reshape(-1), reduction="none"
    ).view_as(targets)
    trained = (token_weights > 0).sum().clamp(min=1)
    return (losses * token_weights).sum() / trained


def training_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """`weighted_cross_entropy` of a batch, computed without wasted work: the vocabulary head (a large
    share of the FLOPs of a small model) runs only at positions that carry loss weight, so padding
    never reaches it and no [batch x length x vocabulary] tensor is ever made."""
    decoder, head = decoder_and_head(model)
    hidden = decoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    weights = batch["weights"][:, 1:]
    trained = weights > 0
    logits = head(hidden[:, :-1][trained]).float()
    losses = torch.nn.functional.cross_entropy(logits, batch["input_ids"][:, 1:][trained], reduction="none")
    return (losses * weights[trained]).sum() / trained.sum().clamp(min=1)


def rotation(count: int, limit: int, turn: int) -> list[int]:
    """Which of `count` items to take at `turn`: all of them when `limit` allows, else `limit` of them
    in rotation, so that over ceil(count / limit) turns every item is taken."""
    if count <= limit:
        return list(range(count))
    start = turn * limit % count
    return [(start + i) % count for i in range(limit)]


def encode_pair(tokenizer: PreTrainedTokenizerBase, pair: QAPair, config: TrainConfig) -> Encoded:
    if pair.kind == "statement":
        return encode_statement(tokenizer, pair.answer, config.statement_weight)
    return encode_example(tokenizer, pair.question, pair.answer, config.qa_weight, config.template_weight)


def batches(
    examples: list[Encoded], batch_size: int, pad_id: int, max_length: int, rng: random.Random
) -> list[dict[str, torch.Tensor]]:
    """Length-bucketed batches (similar lengths together, so little padding), in shuffled order."""
    order = sorted(range(len(examples)), key=lambda i: (len(examples[i].input_ids), rng.random()))
    groups = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(groups)
    out = []
    for group in groups:
        rows = [examples[i] for i in group]
        width = min(max_length, max(len(r.input_ids) for r in rows))
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        weights = torch.zeros((len(rows), width))
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for row, example in enumerate(rows):
            n = min(width, len(example.input_ids))
            ids[row, :n] = torch.tensor(example.input_ids[:n])
            weights[row, :n] = torch.tensor(example.weights[:n])
            mask[row, :n] = 1
        out.append({"input_ids": ids, "attention_mask": mask, "weights": weights})
    return out


def attach_lora(model: PreTrainedModel, config: TrainConfig, adapter: str | None = None) -> PeftModel:
    """Wrap the base model with a fresh LoRA, or with a saved adapter to continue learning."""
    model.set_attn_implementation(config.attention)
    if adapter is not None:
        return PeftModel.from_pretrained(
            model, adapter, is_trainable=True, autocast_adapter_dtype=config.adapter_float32
        )
    return get_peft_model(model, config.lora_config(model), autocast_adapter_dtype=config.adapter_float32)


@dataclass
class EpochReport:
    conversation: int  # 1-based position among this run's conversations
    conversations: int
    epoch: int
    loss: float
    heldout_accuracy: float | None
    seconds: float
    tokens: int = 0  # tokens trained at this learning rate so far (padding excluded): the work done


@dataclass
class LearnResult:
    epochs: int  # the epoch whose weights were kept
    final_loss: float  # training loss of that epoch
    heldout_accuracy: float | None
    qa_pairs: int  # training pairs per epoch (this conversation's, before replay)
    tokens: int  # training tokens processed (padding excluded)
    computed_tokens: int  # token positions computed (padding included)
    epochs_run: int  # epochs trained at the kept learning rate, the kept one and any after it
    seconds: float
    learning_rate: float  # the kept run's (the best held-out one when several were tried)


@dataclass
class _Run:
    """The kept epoch of training at one learning rate, and what the whole run cost."""

    score: float  # held-out accuracy of the kept epoch (minus its loss when there are no held-out pairs)
    epoch: int
    loss: float
    state: dict[str, torch.Tensor]  # the kept epoch's LoRA weights ({} without early stopping: the last)
    qa_pairs: int
    learning_rate: float
    epochs_run: int = 0
    tokens: int = 0
    computed: int = 0


class SequentialTrainer:
    """Learns conversations one after the other into one LoRA adapter (PLUM's sequential training)."""

    def __init__(
        self,
        model: PeftModel,
        tokenizer: PreTrainedTokenizerBase,
        config: TrainConfig,
        reader: Callable[[], Reader] | None = None,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        # What reads the held-out pairs after each epoch (score > 0 is yes), made anew each time so it
        # sees the current weights: PLUM's answer token unless another readout is given.
        self.reader = reader or (lambda: LogOddsReader(model, tokenizer))

    def _trainable(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def _epoch_examples(
        self, notes: Notes, earlier: list[Notes], epoch: int, rng: random.Random
    ) -> tuple[list[Encoded], int]:
        """This epoch's examples: the conversation's own pairs, then replay of earlier ones, bounded
        so that an epoch costs the same after 30 conversations as after 3."""
        config = self.config
        own = training_pairs(notes, epoch, config.pairs)
        replay: list[QAPair] = []
        if earlier and config.replay_share > 0:
            want = round(len(own) * config.replay_share / (1 - config.replay_share))
            pool = [p for old in earlier for p in training_pairs(old, epoch, config.pairs) if p.kind != "recall"]
            replay = rng.sample(pool, min(want, len(pool)))
        # Earlier conversations' recall cues: without them the newest conversation's cue overwrites
        # the others (README, recall readout). All of them up to `replayed_cues`, beyond that that many
        # in rotation, each coming back every ceil(earlier / replayed_cues) epochs.
        turn = len(earlier) * config.epochs + epoch
        for index in rotation(len(earlier), config.replayed_cues, turn):
            replay += [p for p in training_pairs(earlier[index], epoch, config.pairs) if p.kind == "recall"]
        examples = [encode_pair(self.tokenizer, p, config) for p in own + replay]
        return examples, len(own)

    def heldout_accuracy(self, pairs: list[QAPair]) -> float | None:
        if not pairs:
            return None
        self.model.eval()
        scores = self.reader().score([p.question for p in pairs])
        return sum(("yes" if s > 0 else "no") == p.label for s, p in zip(scores, pairs)) / len(pairs)

    def learn(
        self,
        notes: Notes,
        earlier: list[Notes],
        position: int = 1,
        total: int = 1,
        on_epoch: Callable[[EpochReport], None] | None = None,
    ) -> LearnResult:
        """Learn one conversation's notes for up to `epochs` epochs, replaying `earlier` ones; with
        `learning_rates`, once per rate from the same starting adapter, keeping the best held-out run."""
        config = self.config
        rates = config.learning_rates or [config.learning_rate]
        heldout = validation_pairs(notes)
        start = time.perf_counter()
        before = self._lora_state() if len(rates) > 1 else None
        runs: list[_Run] = []
        for rate in rates:
            if before is not None:
                self._load_lora_state(before)
            runs.append(self._epochs(notes, earlier, heldout, rate, position, total, on_epoch, start))
        # The best held-out score wins; among equals the first rate listed (the default comes first).
        kept = max(runs, key=lambda run: run.score)
        if kept.state:
            self._load_lora_state(kept.state)
        self.model.eval()
        return LearnResult(
            kept.epoch,
            kept.loss,
            kept.score if config.early_stopping and heldout else None,
            kept.qa_pairs,
            sum(r.tokens for r in runs),
            sum(r.computed for r in runs),
            kept.epochs_run,
            time.perf_counter() - start,
            kept.learning_rate,
        )

    def _epochs(
        self,
        notes: Notes,
        earlier: list[Notes],
        heldout: list[QAPair],
        learning_rate: float,
        position: int,
        total: int,
        on_epoch: Callable[[EpochReport], None] | None,
        start: float,
    ) -> _Run:
        """Train epoch after epoch at one learning rate; the epoch with the best held-out accuracy is
        kept, stopping after `patience` epochs without improvement or once every held-out pair is right."""
        config = self.config
        rng = random.Random(f"{config.seed}/{notes.conversation_id}")
        torch.manual_seed(config.seed)
        optimizer = torch.optim.AdamW(self._trainable(), lr=learning_rate, weight_decay=config.weight_decay)
        best: _Run | None = None
        stale, tokens, computed = 0, 0, 0
        for epoch in range(1, config.epochs + 1):
            examples, qa_pairs = self._epoch_examples(notes, earlier, epoch, rng)
            self.model.train()
            total_loss, steps = 0.0, 0
            for batch in batches(examples, config.batch_size, self.tokenizer.pad_token_id, config.max_length, rng):
                loss = training_loss(self.model, batch)
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                total_loss += loss.item()
                steps += 1
                tokens += int(batch["attention_mask"].sum())
                computed += batch["attention_mask"].numel()
            loss_value = total_loss / max(steps, 1)
            accuracy = self.heldout_accuracy(heldout) if config.early_stopping else None
            if on_epoch is not None:
                on_epoch(EpochReport(position, total, epoch, loss_value, accuracy, time.perf_counter() - start, tokens))
            if not config.early_stopping:
                best = _Run(0.0, epoch, loss_value, {}, qa_pairs, learning_rate)
                continue
            score = accuracy if accuracy is not None else -loss_value
            if best is None or score >= best.score:  # ties go to the later, better-trained epoch
                stale = 0 if best is None or score > best.score else stale + 1
                best = _Run(score, epoch, loss_value, self._lora_state(), qa_pairs, learning_rate)
            else:
                stale += 1
            # A perfect held-out score cannot be beaten by a later epoch, so stop there.
            if epoch >= config.min_epochs and (stale >= config.patience or accuracy == 1.0):
                break
        assert best is not None
        best.epochs_run, best.tokens, best.computed = epoch, tokens, computed
        return best

    def _lora_state(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad}

    def _load_lora_state(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for name, param in self.model.named_parameters():
                if name in state:
                    param.copy_(state[name])
