"""The memories a server holds loaded, in an LRU, by an identity that never repeats.

A memory is named by what the store guarantees unique for its whole life: a user's sequential or
cartridge memory by (its store id, its version), a MiLP memory by the id its commit drew. Forgetting
every conversation, deleting the user or dropping the MiLP memory never brings a name back, so an
adapter that was forgotten can never be served again from this cache.

Only the engine's thread calls `acquire` (it loads adapters into the one PeftModel and deletes them
from it), between two decoding steps; `in_use` names the memories the running replies read, which
eviction skips, so an adapter in use is never touched.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from peft import PeftModel

from paramem.errors import InputError
from paramem.memory.cartridge import CartridgeModel
from paramem.serve.errors import ApiError, Later, public_reason
from paramem.store.user import UserMemory, VersionGone

Memory = tuple[str, str]  # (kind: "plum" or "milp", user): a memory the server can load


@dataclass
class Loaded:
    identity: str  # unique for the memory's life: the cache's key and the adapter's name in peft
    form: str  # "sequential" (a peft adapter), "cartridge" or "base" (a MiLP memory of no LoRA)
    handle: object = field(repr=False)  # the adapter's name, the CartridgeModel, or None
    version: int | None = None  # the store's version number (a sequential or cartridge memory)

    @property
    def adapter_name(self) -> str:
        """What peft's mixed batches call this memory (`__base__`: no adapter)."""
        return self.handle if self.form == "sequential" else "__base__"


@dataclass(frozen=True)
class _Found:
    """A memory's current version as the store names it, before it is loaded."""

    identity: str
    form: str
    base_model: str | None
    version: int | None  # a sequential or cartridge memory's version, its files read with `reading`
    folder: Path | None  # a MiLP memory's folder


class Memories:
    """The LRU of loaded memories over one base model and one PeftModel."""

    def __init__(
        self,
        base,
        tokenizer,
        home: Path | None,
        base_model: str,
        cache_size: int,
        forgetting: Callable[[str], str | None] = lambda user: None,
    ):
        self.base, self.tokenizer, self.home, self.base_model = base, tokenizer, home, base_model
        # Once peft freezes the base model's weights, torch.matmul no longer folds the vocabulary head's
        # input (the prompt's last position, a strided view) into one matrix product: it copies the
        # head's weight once per row instead, 5 s for a batch of 8 on the 0.5B model in bf16 (2-core
        # AMD EPYC). A contiguous input takes the fast path; the values are the same.
        base.get_output_embeddings().register_forward_pre_hook(lambda _, args: (args[0].contiguous(), *args[1:]))
        self.cache_size = cache_size
        self.forgetting = forgetting  # the job id of a forget pending for a user, which blocks its memory
        self.peft = None  # the PeftModel, once a sequential memory is loaded
        self.loaded: OrderedDict[Memory, Loaded] = OrderedDict()
        self.loads = 0  # memories read from disk (an LRU hit reads none)
        self.owner: threading.Thread | None = None  # the one thread that may change them (the engine's)
        self.in_use: set[str] = set()  # identities the running replies read (the engine keeps it)

    def acquire(self, key: Memory) -> Loaded:
        """The memory's current version, loaded (from the LRU when that version is in it already)."""
        assert self.owner in (None, threading.current_thread()), "memories change on the engine's thread only"
        for _ in range(3):  # a job may commit between reading the version and reading its files
            try:
                return self._acquire(key)
            except VersionGone:
                continue
        raise ApiError(503, "this memory is changing faster than it can be read; ask again", "server_error")

    def refuse_while_forgetting(self, user: str) -> None:
        """A 409 while a forget of `user` is queued or running: until it ends, nothing of theirs is
        read, neither the memory nor the text that may still hold the conversation."""
        pending = self.forgetting(user)
        if pending is not None:
            raise ApiError(
                409, f"this memory is being rewritten to forget a conversation (job {pending}); ask again when it ends"
            )

    def check(self, key: Memory) -> _Found:
        """What `key`'s current version is, read from the store without loading anything; an ApiError
        when it cannot be answered from (none, another base model, a forget pending, damaged files).
        Any thread may call it: it reads small files only."""
        kind, user = key
        self.refuse_while_forgetting(user)
        memory = UserMemory(user, self.home)
        try:
            if kind == "milp":
                record = memory.milp.record()
                if record is None:
                    raise ApiError(404, f"user {user!r} has no MiLP memory (paramem search)", "not_found_error")
                adapter = Path(record["adapter"])
                uid = (
                    record.get("uid") or f"{record['version']}-{(memory.milp.root / 'current.json').stat().st_mtime_ns}"
                )
                form = "sequential" if (adapter / "adapter_config.json").exists() else "base"  # n = 0: no LoRA
                found = _Found(f"m{_short(user)}{_short(uid)}", form, record.get("base_model"), None, adapter)
            else:
                version = memory.current_version()
                if version is None:
                    raise ApiError(404, f"user {user!r} has learned nothing yet", "not_found_error")
                settings = memory.settings()
                identity = f"p{_short(user)}{_short(memory.store_id())}v{version}"
                found = _Found(identity, settings.get("form", "sequential"), settings.get("base_model"), version, None)
        except InputError as error:  # a damaged manifest or record: said once, without the path
            raise ApiError(
                500, f"user {user!r}'s memory cannot be read: {public_reason(error)}", "server_error"
            ) from None
        if found.base_model != self.base_model:
            raise ApiError(409, f"{user!r} learned on {found.base_model!r}; this server serves {self.base_model!r}")
        return found

    def _acquire(self, key: Memory) -> Loaded:
        found = self.check(key)
        identity, form = found.identity, found.form
        cached = self.loaded.get(key)
        if cached is not None and cached.identity == identity:
            self.loaded.move_to_end(key)
            return cached
        if cached is not None:
            if cached.identity in self.in_use:  # running replies read the version before: once they end
                raise Later
            self._evict(key)
        reading = nullcontext(found.folder) if found.folder else UserMemory(key[1], self.home).reading(found.version)
        with reading as folder:
            if form == "cartridge":
                handle = CartridgeModel.from_pretrained(self.base, self.tokenizer, folder)
            elif form == "base":
                handle = None
            else:
                handle = self._add_adapter(folder, identity)
        self.loads += 1
        loaded = self.loaded[key] = Loaded(identity, form, handle, found.version)
        for old in [k for k, v in self.loaded.items() if v.identity not in self.in_use and k != key]:
            if len(self.loaded) <= self.cache_size:
                break
            self._evict(old)
        return loaded

    def _add_adapter(self, folder: Path, name: str) -> str:
        """Load an adapter folder into the one PeftModel under `name`."""

        if self.peft is None:
            self.peft = PeftModel.from_pretrained(self.base, str(folder), adapter_name=name)
            self.peft.eval()
        elif name not in self.peft.peft_config:
            self.peft.load_adapter(str(folder), adapter_name=name)
        return name

    def _evict(self, key: Memory) -> None:
        gone = self.loaded.pop(key)
        if gone.form == "sequential" and self.peft is not None and len(self.peft.peft_config) > 1:
            if self.peft.active_adapter == gone.handle:  # peft deletes no active adapter
                self.peft.set_adapter(next(n for n in self.peft.peft_config if n != gone.handle))
            self.peft.delete_adapter(gone.handle)
        # peft's last adapter stays in it, unused: its name is never asked for again


def _short(text: str) -> str:
    """A short name made of any text, valid in a module name."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]
