"""Forget: take one conversation out of a user's memory, and say how exactly.

  cartridge memory   exact: the conversation's cartridge is dropped and the others are composed as
                     before. Each cartridge was learned alone, so nothing of the forgotten one is left
                     in the others.
  sequential memory  retrained: a fresh adapter learns every other conversation again, in order, from
                     what was kept of them (their notes, the memory's own where the text was
                     dropped, and for a distilled memory their teacher targets); it costs one
                     learning run per kept conversation. Exact but for one trace: when the
                     forgotten conversation arrived, negatives of other conversations' notes that
                     its text contradicted were dropped (`drop_contradicting_negatives`), and they
                     stay dropped. Notes the memory wrote lose what resembles the forgotten
                     conversation first (a memory recalls facts under the wrong date).
  indexed only       exact: a conversation `remember` indexed but has not learned yet (issue 38) has
                     only its text to lose, and it is deleted ("unindexed").

Either way the conversation's manifest row and its text (its notes with them), its teacher targets,
its teacher-notes cache entry and every cached recollection (`recall.json` of old versions) go, and
the manifest records that a conversation was forgotten: its id and the date, never its content. The
old memory stays in use until the new one is committed, so an interrupted retraining forgets nothing
and can be run again.

  MiLP memory        dropped whole when it learned the conversation (`paramem search` learned all its
                     conversations at once and keeps none of their text, so it cannot learn the others
                     again by itself): run `paramem search` again without it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from paramem.augment.recollected import without_what_resembles
from paramem.augment.teaching import NotesCache
from paramem.config import Form, Objective, PairConfig, TrainConfig
from paramem.data.notes import Notes
from paramem.errors import InputError
from paramem.files import cache_home
from paramem.memory.cartridge import CartridgeModel
from paramem.memory.distill_teacher import load_targets
from paramem.memory.lora import attach_lora
from paramem.memory.trainer import SequentialTrainer
from paramem.model.loading import load_model
from paramem.store.manifest import LearnedConversation
from paramem.store.user import UserMemory


@dataclass(frozen=True)
class Forgotten:
    conversation_id: str
    how: str  # "dropped" (a cartridge) or "retrained" (a sequential adapter)
    exact: bool
    relearned: int  # conversations learned again
    seconds: float
    note: str  # what the forgetting could not undo, in a sentence


def forget(
    user: str,
    conversation_id: str,
    home: Path | None = None,
    on_conversation: Callable[[int, int, str], None] | None = None,
) -> Forgotten:
    """Forget one learned conversation of `user` (see the module docstring for how)."""

    start = time.perf_counter()
    memory = UserMemory(user, home)
    milp = memory.milp.record()
    in_milp = milp is not None and conversation_id in milp.get("conversations", [])
    if in_milp and conversation_id not in {r.id for r in memory.learned()}:
        with memory:
            memory.milp.drop()
        note = "the MiLP memory that learned it was removed; run paramem search again without it"
        return Forgotten(conversation_id, "milp dropped", True, 0, time.perf_counter() - start, note)
    if not memory.exists and milp is not None:
        raise InputError(f"user {user!r} has no learned conversation {conversation_id!r}")
    memory.require()
    with memory:
        if in_milp:
            memory.milp.drop()
        learned = memory.learned()
        gone = next((r for r in learned if r.id == conversation_id), None)
        if gone is None and conversation_id in memory.texts.ids():  # indexed, not learned yet: text only
            NotesCache(cache_home() / "teacher").remove(memory.texts.forget(conversation_id))
            return Forgotten(conversation_id, "unindexed", True, 0, time.perf_counter() - start, "it was never learned")
        if gone is None:
            raise InputError(f"user {user!r} has no learned conversation {conversation_id!r}")
        kept = [r for r in learned if r.id != conversation_id]
        if memory.form == Form.CARTRIDGE:
            model = _without_cartridge(memory, conversation_id) if kept else None
            memory.commit_forgetting(model, conversation_id, kept)
            result = Forgotten(
                conversation_id, "dropped", True, 0, 0.0, "nothing is left: each cartridge was learned alone"
            )
        else:
            notes = _notes_to_relearn(memory, conversation_id)
            model, kept = _retrained(memory, notes, kept, on_conversation) if kept else (None, [])
            memory.commit_forgetting(model, conversation_id, kept, notes)
            note = "negatives of other conversations' notes that its text contradicted when it was learned stay dropped"
            result = Forgotten(conversation_id, "retrained", False, len(kept), 0.0, note)
        NotesCache(cache_home() / "teacher").remove(gone.content_hash)
    if in_milp:
        result = replace(result, note=result.note + "; the MiLP memory that learned it too was removed")
    return replace(result, seconds=time.perf_counter() - start)


def _without_cartridge(memory: UserMemory, conversation_id: str):
    """The stored cartridges but one, read without loading the base model's weights twice."""

    settings = memory.settings()
    base, tokenizer = load_model(settings["base_model"], None, settings.get("dtype"))
    with memory.reading() as folder:
        model = CartridgeModel.from_pretrained(base, tokenizer, folder)
    model.cartridges = type(model.cartridges)([c for c in model.cartridges if c.conversation_id != conversation_id])
    return model


def stored_train_config(settings: dict):
    """The learning settings of a memory's last `remember` run; for a memory written before they were
    stored, the defaults with its stored LoRA shape."""

    if "train" in settings:
        train = dict(settings["train"])
        return TrainConfig(**{**train, "pairs": PairConfig(**train["pairs"])})
    shape = {k: settings[k] for k in ("lora_rank", "lora_alpha", "target_modules", "layers") if k in settings}
    return TrainConfig(**shape)


def _notes_to_relearn(memory: UserMemory, conversation_id: str) -> list[Notes]:
    """The kept conversations' notes, those the memory wrote without what resembles the forgotten one's."""
    stored = memory.notes()
    gone = next(n for n in stored if n.conversation_id == conversation_id)
    return [without_what_resembles(n, gone) for n in stored if n is not gone]


def _retrained(
    memory: UserMemory,
    notes: list[Notes],
    kept: list[LearnedConversation],
    on_conversation: Callable[[int, int, str], None] | None,
):
    """A fresh adapter learning the kept conversations again, in their order, as `remember` learned
    them: from their `notes` (and stored teacher targets), with the stored settings."""

    settings = memory.settings()
    train = stored_train_config(settings)
    base, tokenizer = load_model(settings["base_model"], None, settings.get("dtype"))
    model = attach_lora(base, train)
    trainer = SequentialTrainer(model, tokenizer, train)
    if train.objective == Objective.DISTILL:
        for n in notes:
            stored = memory.targets(n.conversation_id)
            if stored is None:
                raise InputError(
                    f"the teacher targets of {n.conversation_id!r} are missing; it cannot be learned again"
                )
            trainer.targets[n.conversation_id] = load_targets(stored)
    records = []
    for position, (record, conversation_notes) in enumerate(zip(kept, notes), start=1):
        if on_conversation:
            on_conversation(position, len(kept), record.id)
        result = trainer.learn(conversation_notes, notes[: position - 1], position, len(kept))
        records.append(replace(record, **result.record_fields()))
    return model, records
