"""Train: PLUM's weighted cross-entropy and the sequential, conversation-by-conversation trainer."""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from peft import PeftModel
from transformers import PreTrainedTokenizerBase

from paramem.augment.pairs import QAPair, training_pairs, validation_pairs
from paramem.config import Form, Objective, TrainConfig
from paramem.data.notes import Notes
from paramem.memory.batching import batches, training_loss
from paramem.memory.distill import distill_batches, distillation_loss, encode_target
from paramem.model.prompts import Encoded, encode_example, encode_statement
from paramem.model.scoring import LogOddsReader, Reader


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

    def record_fields(self) -> dict:
        """What the store's LearnedConversation keeps of this result."""
        return {
            "qa_pairs": self.qa_pairs,
            "epochs": self.epochs,
            "final_loss": self.final_loss,
            "heldout_accuracy": self.heldout_accuracy,
            "seconds": self.seconds,
            "learning_rate": self.learning_rate,
        }


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
        # objective "distill": the teacher's targets of this and earlier conversations, by conversation id
        self.targets: dict[str, list] = {}

    def _trainable(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def _epoch_examples(
        self, notes: Notes, earlier: list[Notes], epoch: int, rng: random.Random
    ) -> tuple[list[Encoded], int]:
        """This epoch's examples: the conversation's own pairs, then replay of earlier ones, bounded
        so that an epoch costs the same after 30 conversations as after 3."""
        config = self.config
        if config.objective == Objective.DISTILL:
            return self._distill_examples(notes, earlier, rng)
        own = training_pairs(notes, epoch, config.pairs)
        replay: list[QAPair] = []
        if earlier and config.replay_share > 0:
            want = round(len(own) * config.replay_share / (1 - config.replay_share))
            pool = [p for old in earlier for p in training_pairs(old, epoch, config.pairs) if p.kind != "recall"]
            replay = rng.sample(pool, min(want, len(pool)))
        # Earlier conversations' recall cues: without them the newest conversation's cue overwrites
        # the others (docs/usage.md, recall readout). All of them up to `replayed_cues`, beyond that that many
        # in rotation, each coming back every ceil(earlier / replayed_cues) epochs.
        turn = len(earlier) * config.epochs + epoch
        for index in rotation(len(earlier), config.replayed_cues, turn):
            replay += [p for p in training_pairs(earlier[index], epoch, config.pairs) if p.kind == "recall"]
        examples = [encode_pair(self.tokenizer, p, config) for p in own + replay]
        return examples, len(own)

    def _distill_examples(self, notes: Notes, earlier: list[Notes], rng: random.Random) -> tuple[list, int]:
        """The teacher's targets for this conversation, then a replayed share of earlier conversations'
        stored targets (never their raw text)."""

        own = self.targets[notes.conversation_id]
        # A cartridge is learned alone: it holds its own conversation and depends on no other.
        shared = self.config.form == Form.SEQUENTIAL
        pool = [t for old in earlier for t in self.targets.get(old.conversation_id, [])] if shared else []
        want = round(len(own) * self.config.replay_share / (1 - self.config.replay_share)) if pool else 0
        chosen = own + rng.sample(pool, min(want, len(pool)))
        check = self.config.distill_check_weight
        return [encode_target(self.tokenizer, t, check if t.kind == "check" else 1.0) for t in chosen], len(own)

    def heldout_accuracy(self, pairs: list[QAPair]) -> float | None:
        """Accuracy on the held-out pairs under the balanced rule: the better-scored half is called
        yes (they are half yes by construction). A fixed threshold would judge the scale of the
        scores, not whether they separate: at threshold 0 a memory that says yes a little more
        readily than before scores 0.5 whatever it learned."""
        if not pairs:
            return None
        self.model.eval()
        scores = self.reader().score([p.question for p in pairs])
        threshold = statistics.median(scores)
        return sum(("yes" if s > threshold else "no") == p.label for s, p in zip(scores, pairs)) / len(pairs)

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
        rates = config.rates()
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
            for batch in self._batches(examples, rng):
                loss = self._loss(self.model, batch)
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

    def _batches(self, examples: list, rng: random.Random) -> list[dict[str, torch.Tensor]]:
        if self.config.objective == Objective.DISTILL:
            return distill_batches(examples, self.config.batch_size, self.tokenizer.pad_token_id, rng)
        return batches(examples, self.config.batch_size, self.tokenizer.pad_token_id, self.config.max_length, rng)

    def _loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.config.objective == Objective.DISTILL:
            return distillation_loss(model, batch, self.config.distill_hidden_weight)
        return training_loss(model, batch)

    def _lora_state(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad}

    def _load_lora_state(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for name, param in self.model.named_parameters():
                if name in state:
                    param.copy_(state[name])
