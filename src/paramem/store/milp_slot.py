"""A user's MiLP memory, kept beside the sequential one: `milp/<version>/` folders and `current.json`
naming the one in use, switched in one atomic rename."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from paramem.files import fsync_dir, fsync_tree, write_atomic_bytes

if TYPE_CHECKING:  # the memory holds its MiLP slot; this module needs only its folder and lock
    from paramem.store.user import UserMemory


class MilpSlot:
    def __init__(self, memory: UserMemory):
        self.memory = memory

    @property
    def root(self) -> Path:
        return self.memory.root / "milp"

    def record(self) -> dict[str, Any] | None:
        """What current.json says of the MiLP memory in use, None when there is none."""
        path = self.root / "current.json"
        if not path.exists():
            return None
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            return {**record, "adapter": str(self.root / str(record["version"]))}
        except (ValueError, KeyError, TypeError) as error:
            raise self.memory.damaged(path, error) from None

    def commit(self, write: Callable[[Path], None], record: dict[str, Any]) -> None:
        """Write a MiLP memory as a new version (`write(folder)` puts its files there; they are flushed
        to disk), then switch current.json to it in one atomic rename. The version before stays until
        the next commit, so a reader still loading it (a commit takes a whole search) finds it whole;
        older ones go."""
        assert self.memory.locked, "committing a MiLP memory needs the user's lock"
        previous = self.record()
        version = (previous["version"] + 1) if previous else 1
        folder = self.root / str(version)
        shutil.rmtree(folder, ignore_errors=True)  # an uncommitted leftover of a crash
        folder.mkdir(parents=True)
        write(folder)
        fsync_tree(folder)
        write_atomic_bytes(
            self.root / "current.json",
            json.dumps({**record, "version": version, "uid": uuid.uuid4().hex}).encode(),
        )
        for entry in self.root.iterdir():
            if entry.is_dir() and entry.name.isdigit() and int(entry.name) < version - 1:
                shutil.rmtree(entry, ignore_errors=True)

    def drop(self) -> None:
        """Remove the MiLP memory and its search (after `forget` of a conversation it learned)."""
        assert self.memory.locked, "dropping a MiLP memory needs the user's lock"
        (self.root / "current.json").unlink(missing_ok=True)  # first: no reader finds it from now on
        shutil.rmtree(self.root, ignore_errors=True)
        fsync_dir(self.memory.root)
