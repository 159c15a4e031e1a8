"""Remember: the whole flow for one user, conversations -> augment -> train -> store.

Each conversation is committed to the store as soon as it is learned, so an interrupted run loses
at most the conversation in progress, and the next run resumes after the last committed one. With
the text dropped (`--keep-text until-consolidated` or `never`), the commit keeps the notes the
memory writes of the conversation in place of the teacher's (`augment.recollected`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError

from paramem.augment.recollected import notes_from_recollection
from paramem.augment.teachers.base import Teacher, drop_contradicting_negatives
from paramem.augment.teaching import NotesCache, augment
from paramem.config import Form, KeepText, Objective, RememberConfig, TrainConfig
from paramem.data.conversations import Conversation
from paramem.data.notes import Notes
from paramem.errors import InputError
from paramem.files import cache_home
from paramem.memory.cartridge import INDEX, Cartridge, CartridgeModel, cartridge_tokens, slot_cache
from paramem.memory.distill_teacher import as_stored, conversation_slot, dump_targets, load_targets, teacher_targets
from paramem.memory.lora import attach_lora
from paramem.memory.trainer import EpochReport, SequentialTrainer
from paramem.model.loading import dtype_of, load_model
from paramem.read.recall import recall_cues, recollect
from paramem.store.manifest import LearnedConversation, now_iso
from paramem.store.user import UserMemory


@dataclass
class Callbacks:
    on_augmented: Callable[[int], None] | None = None  # number of conversations to learn
    on_conversation: Callable[[int, int, str], None] | None = None  # position, total, conversation id
    on_epoch: Callable[[EpochReport], None] | None = None
    on_learned: Callable[[LearnedConversation], None] | None = None
    on_indexed: Callable[[int], None] | None = None  # conversations indexed, answerable from now on


def remember(
    user: str,
    conversations: list[Conversation],
    teacher: Teacher,
    config: RememberConfig,
    home: Path | None = None,
    callbacks: Callbacks | None = None,
) -> list[LearnedConversation]:
    """Learn every conversation not yet in `user`'s memory; returns what this call learned."""
    callbacks = callbacks or Callbacks()
    memory = UserMemory(user, home)
    with memory:  # the write lock: a second `remember` for this user fails at once
        memory.repair()
        new_settings = _memory_settings(memory, config)  # checked now, written once there is work to do
        existed = memory.exists
        todo = _to_learn(memory, conversations)
        dropping = config.keep_text != KeepText.ALWAYS
        if dropping:  # what a user who kept the text, or a run stopped after a commit, left goes now
            _drop_what_the_text_left(memory)
        earlier = memory.notes()
        teacher_written = dropping and any(n.written_by == "teacher" for n in earlier)
        # Indexed first, before any model loads: answerable through retrieval from now on.
        indexed = memory.texts.add(todo) if config.keep_text != KeepText.NEVER else []
        if indexed:  # the base model answers from the text before the memory exists
            memory.save_settings(new_settings)
        if callbacks.on_indexed:
            callbacks.on_indexed(len(indexed))
        if callbacks.on_augmented:
            callbacks.on_augmented(len(todo))
        if not todo and not teacher_written:
            return []
        cache = NotesCache(cache_home() / "teacher") if config.notes_cache else None
        notes = augment(todo, teacher, cache, regenerate=config.regenerate_notes)
        for conversation, conversation_notes in zip(todo, notes):  # refused before anything is learned
            if not (conversation_notes.topics or conversation_notes.facts):
                # The call is refused whole: what it indexed goes, and so does the refused text (an
                # upload the server indexed), which no later run could learn either.
                memory.texts.drop(sorted({*indexed, conversation.id}))
                if not existed:
                    memory.manifest.unlink()
                raise InputError(
                    f"conversation {conversation.id!r}: the {teacher.name} teacher found nothing to "
                    "learn in it (no topics, no facts)",
                    conversation.metadata.get("file"),
                    conversation.metadata.get("line"),
                )
        if config.train.form == Form.SEQUENTIAL:  # one adapter answers for every conversation at once
            notes = drop_contradicting_negatives([*earlier, *notes], [c.text for c in todo])[len(earlier) :]
            memory.update_notes(earlier)  # earlier negatives the new conversations made untrue stay dropped
        # A cartridge answers for its own conversation only, so its notes depend on no other one, and
        # dropping it later leaves the others exactly as if it had never been learned.
        model, tokenizer = load_model(config.base_model, config.dtype, memory.settings().get("dtype"))
        # answers load the model the same way; `forget` learns again with the last run's settings
        memory.save_settings({**new_settings, "dtype": dtype_of(model), "train": asdict(config.train)})
        cartridges = config.train.form == Form.CARTRIDGE
        if cartridges:  # earlier conversations' cartridges stay on disk; each new one is learned alone
            model = CartridgeModel(model, tokenizer)
            kept = _stored_cartridges(memory, model, tokenizer)
        else:
            model = attach_lora(model, config.train, adapter=_adapter_path(memory))
        trainer = SequentialTrainer(model, tokenizer, config.train)
        distill = config.train.objective == Objective.DISTILL
        if distill:  # earlier conversations replay from their stored targets (none for plum-learned ones)
            for old in earlier:
                stored = memory.targets(old.conversation_id)
                if stored is not None:
                    trainer.targets[old.conversation_id] = load_targets(stored)
        if teacher_written:  # learned while the text was kept: the memory writes their notes now
            _let_the_memory_write(memory, model, tokenizer, earlier, kept if cartridges else None)
        version = memory.next_version() - 1
        learned = []
        for position, (conversation, conversation_notes) in enumerate(zip(todo, notes), start=1):
            if callbacks.on_conversation:
                callbacks.on_conversation(position, len(todo), conversation.id)
            teacher = {}
            if distill:  # the base model reading the conversation is the teacher: the adapter is off
                with model.disable_adapter():
                    targets, cost = teacher_targets(model, tokenizer, conversation, conversation_notes, config.train)
                trainer.targets[conversation.id] = targets
                if not dropping:  # a cartridge never reads them again (sequential distill keeps its text)
                    memory.save_targets(conversation.id, dump_targets(targets))
                teacher = {
                    "teacher_seconds": cost.seconds,
                    "teacher_prefill_seconds": cost.prefill_seconds,
                    "teacher_writing_seconds": cost.writing_seconds,
                    "teacher_queries": cost.queries,
                }
            if cartridges:
                new = initial_cartridge(model, tokenizer, conversation, conversation_notes, config.train)
                model.cartridges = torch.nn.ModuleList([new.learnable()])
            result = trainer.learn(conversation_notes, earlier, position, len(todo), callbacks.on_epoch)
            if distill:  # replayed from now on as stored: without the teacher's hidden states
                trainer.targets[conversation.id] = as_stored(trainer.targets[conversation.id])
            if dropping:  # kept from now on: what the memory recalls of it (a cartridge: alone, as now)
                conversation_notes = _memory_notes(model, tokenizer, [conversation_notes])[0]
            if cartridges:  # the version committed holds every cartridge, in learning order
                kept.append(new.learnable(False))
                model.cartridges = torch.nn.ModuleList(kept)
            version += 1
            record = LearnedConversation(
                id=conversation.id,
                content_hash=conversation.content_hash,
                timestamp=conversation.timestamp,
                adapter_version=version,
                learned_at=now_iso(),
                **teacher,
                **result.record_fields(),
            )
            memory.commit(model, record, conversation_notes, drop_text=dropping)
            if dropping:  # the cached teacher's notes only spare a rerun the teacher
                NotesCache(cache_home() / "teacher").remove(conversation.content_hash)
            earlier.append(conversation_notes)
            learned.append(record)
            if callbacks.on_learned:
                callbacks.on_learned(record)
        return learned


def _drop_what_the_text_left(memory: UserMemory) -> None:
    """The texts of learned conversations, their teacher targets and their cached teacher's notes
    (the teacher's notes in the manifest are replaced once the model is loaded)."""
    learned = memory.learned()
    memory.texts.drop(sorted(memory.texts.ids() & {r.id for r in learned}))
    for record in learned:
        memory.drop_targets(record.id)
        NotesCache(cache_home() / "teacher").remove(record.content_hash)


def _memory_notes(model, tokenizer, notes: list[Notes], cartridges: list[Cartridge] | None = None) -> list[Notes]:
    """Each conversation's notes as the memory itself writes them (`augment.recollected`): a sequential
    adapter recalls every conversation at once; with `cartridges`, each is composed alone to recall its
    own (the model's cartridges are put back after)."""
    if cartridges is None:
        texts = recollect(model, tokenizer, recall_cues(notes))
    else:
        composed, by_id = model.cartridges, {c.conversation_id: c for c in cartridges}
        texts = []
        for n in notes:
            model.cartridges = torch.nn.ModuleList([by_id[n.conversation_id]])
            texts += recollect(model, tokenizer, recall_cues([n]))
        model.cartridges = composed
    return [notes_from_recollection(n, text) for n, text in zip(notes, texts)]


def _let_the_memory_write(
    memory: UserMemory, model, tokenizer, earlier: list[Notes], cartridges: list[Cartridge] | None
) -> None:
    """Replace (in `earlier` and in the store) the teacher's notes of learned conversations by the
    memory's: the user kept the text when they were learned and drops it now."""
    stale = [i for i, n in enumerate(earlier) if n.written_by == "teacher"]
    rewritten = _memory_notes(model, tokenizer, [earlier[i] for i in stale], cartridges)
    for i, notes in zip(stale, rewritten):
        earlier[i] = notes
    memory.update_notes(rewritten)


def _to_learn(memory: UserMemory, conversations: list[Conversation]) -> list[Conversation]:
    """What this run learns: the stored conversations an earlier run indexed but did not finish
    learning, then the given ones not learned yet (one learned under another id with the same
    content is skipped; the same id with other content is refused)."""
    known = {c.id: c.content_hash for c in memory.learned()}
    learned, todo, hashes = set(known), [], set(known.values())
    for conversation in [*memory.texts.waiting(), *conversations]:
        if conversation.id in known:
            if known[conversation.id] != conversation.content_hash:
                held = "learned" if conversation.id in learned else "stored"
                raise InputError(f"conversation {conversation.id!r} is already {held} with different content")
            continue
        if conversation.content_hash not in hashes:
            todo.append(conversation)
            hashes.add(conversation.content_hash)
            known[conversation.id] = conversation.content_hash
    return todo


def initial_cartridge(
    model: CartridgeModel, tokenizer, conversation: Conversation, notes, config: TrainConfig
) -> Cartridge:
    """A new cartridge: the base model's keys and values of the first tokens of the conversation,
    as the teacher reads it, `cartridge_fraction` of its length (Cartridges' initialisation)."""
    slot = conversation_slot(tokenizer, conversation, notes.date)
    size = cartridge_tokens(len(slot), config.cartridge_fraction, config.cartridge_min_tokens)
    keys, values = slot_cache(model.model, model.head, slot[:size])
    return Cartridge(conversation.id, keys, values)


def _stored_cartridges(memory: UserMemory, model: CartridgeModel, tokenizer) -> list[Cartridge]:
    if memory.current_version() is None:
        return []
    with memory.reading() as folder:
        try:
            return list(CartridgeModel.from_pretrained(model.model, tokenizer, folder).cartridges)
        except (OSError, ValueError, KeyError, SafetensorError) as error:
            raise memory.damaged(folder / INDEX, error) from None


def _adapter_path(memory: UserMemory) -> str | None:
    path = memory.current_adapter()
    return str(path) if path is not None else None


def _memory_settings(memory: UserMemory, config: RememberConfig) -> dict:
    """The settings a new memory starts with; a memory keeps the base model and LoRA shape it was
    started with, so another base model for an existing one is refused."""
    train = config.train
    wanted = {
        "base_model": config.base_model,
        "form": train.form,
        "lora_rank": train.lora_rank,
        "lora_alpha": train.lora_alpha,
        "target_modules": train.target_modules,
        "layers": train.layers,
    }
    stored = memory.settings()
    if stored and stored.get("base_model") != config.base_model:
        raise InputError(
            f"user {memory.user!r} was learned on base model {stored.get('base_model')!r}, not {config.base_model!r}"
        )
    if stored and stored.get("form", Form.SEQUENTIAL) != train.form:
        raise InputError(
            f"user {memory.user!r} is a {stored.get('form', 'sequential')} memory; it cannot learn as {train.form}"
        )
    return {} if stored else wanted
