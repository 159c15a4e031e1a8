"""Personalising one user with MiLP: the search of where, how many and how large the LoRAs are
(memory/milp/search.py) run on their conversations, its choice learned and committed to their store,
and loaded again to answer."""

from __future__ import annotations

import functools
import json
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from peft import PeftModel

from paramem.config import MultiLoraConfig
from paramem.errors import InputError
from paramem.files import write_atomic
from paramem.memory.milp.model import (
    assistant_turns,
    learn,
    load,
    mean_loss,
    model_depth,
    replies,
    reply_example,
    save,
)
from paramem.memory.milp.search import Objectives, SearchConfig, SearchSpace, Trial, choose, describe, search
from paramem.metrics.replies import rouge
from paramem.model.loading import dtype_of, load_model
from paramem.store.user import UserMemory


@dataclass
class DevUser:
    """A development user for the search: learned from `train`, scored on the replies of `validation`."""

    name: str
    train: list  # Conversations the trial's memory learns
    validation: object  # the Conversation whose assistant turns are scored
    scored_from: int = 0  # only the assistant turns from this place on are scored (the rest are context)

    def scored_turns(self) -> list:
        return [(c, r) for c, r in assistant_turns(self.validation) if len(c) >= self.scored_from]


class MemoryObjective:
    """A trial: learn each development user's memory with the configuration, then score the gold
    replies' cross-entropy and the ROUGE-L of `replies` generated ones, averaged over users."""

    def __init__(self, model, tokenizer, users: list[DevUser], train_config, replies: int = 3, on_epoch=None):
        self.model, self.tokenizer, self.users = model, tokenizer, users
        self.train_config, self.replies, self.on_epoch = train_config, replies, on_epoch

    def __call__(self, memory: MultiLoraConfig) -> Objectives:
        losses, rouges = [], []
        for user in self.users:
            learned = learn(self.model, self.tokenizer, user.train, memory, self.train_config, self.on_epoch)
            try:
                scored = user.scored_turns()
                if not scored:
                    continue
                examples = [reply_example(self.tokenizer, c, r, self.train_config) for c, r in scored]
                losses.append(mean_loss(learned, self.tokenizer, examples))
                contexts, golds = zip(*scored[: self.replies])
                made = replies(learned, self.tokenizer, list(contexts), self.train_config)
                rouges += [rouge(text, gold)[1] for text, gold in zip(made, golds)]
            finally:
                if isinstance(learned, PeftModel):
                    learned.unload()  # the base model back, without the trial's LoRAs
        if not losses:
            raise InputError("no development user has an assistant reply to score")
        return Objectives(sum(losses) / len(losses), sum(rouges) / len(rouges))


def settle_spec(folder: Path, spec: dict, remedy: str) -> None:
    """Write what a search's trials depend on to `folder/spec.json`, or refuse to resume a search
    begun with other settings: trials made under another base model, dtype (a CPU with native bf16
    picks it by default, one without picks float32) or data would be mixed silently otherwise."""

    path = folder / "spec.json"
    if path.exists() and json.loads(path.read_text(encoding="utf-8")) != json.loads(json.dumps(spec)):
        raise InputError(f"a search with other settings, dtype or data was started here; {remedy}", path=path)
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(spec, indent=2))


def search_user(
    user: str,
    conversations: list,
    base_model: str,
    space_options: dict,
    train_config,
    config: SearchConfig,
    replies: int = 3,
    home: Path | None = None,
    dtype: str | None = None,
    restart: bool = False,
    on_trial: Callable[[Trial], None] | None = None,
) -> tuple[list[Trial], dict]:
    """`paramem search`: search on the user's conversations (all but the last learned, the last's
    replies scored), learn the chosen configuration from all of them, store it beside the PLUM memory.
    An interrupted search resumes from its saved trials when run again with the same settings."""

    if len(conversations) < 2:
        raise InputError("a search needs at least 2 conversations: it scores replies in the last one")
    with UserMemory(user, home) as memory:
        folder = memory.milp.root / "search"
        model, tokenizer = load_model(base_model, dtype)
        space = SearchSpace(depth=model_depth(model), **space_options)  # bad entries fail before training
        spec = {
            "base_model": base_model,
            "dtype": dtype_of(model),
            "conversations": [c.content_hash for c in conversations],
            "space": asdict(space),
            "train": asdict(train_config),
            "search": asdict(config),
            "replies": replies,
        }
        if restart:
            shutil.rmtree(folder, ignore_errors=True)
        settle_spec(folder, spec, "pass --restart to begin again")
        users = [DevUser(user, list(conversations[:-1]), conversations[-1])]
        objective = MemoryObjective(model, tokenizer, users, train_config, replies)
        trials = search(space, objective, folder, config, on_trial)
        chosen = choose(trials)
        learned = learn(model, tokenizer, list(conversations), chosen.memory, train_config)
        record = {
            "base_model": base_model,
            "dtype": dtype_of(model),
            "memory": chosen.config,
            "described": describe(chosen.memory, space.depth),
            "train": asdict(train_config),
            "chosen_trial": chosen.number,
            "conversations": [c.id for c in conversations],
        }
        memory.milp.commit(functools.partial(save, learned), record)
        return trials, record


def load_milp_memory(user: str, home: Path | None = None, dtype: str | None = None):
    """(model with the user's MiLP memory, tokenizer, its record); `InputError` when there is none."""

    memory = UserMemory(user, home)
    record = memory.milp.record()
    if record is None:
        raise InputError(f"user {user!r} has no MiLP memory under {memory.root} (run `paramem search`)")
    base, tokenizer = load_model(record["base_model"], dtype, record.get("dtype"))
    try:
        return load(base, record["adapter"]), tokenizer, record
    except (OSError, ValueError, RuntimeError) as error:
        raise memory.damaged(Path(record["adapter"]), error) from None
