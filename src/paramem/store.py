"""Per-user memory on disk: a standard PEFT adapter folder plus a SQLite manifest.

    $PARAMEM_HOME/users/<user>/
        adapter/            -> versions/<n>: `PeftModel.from_pretrained(base, "adapter")` loads it as is
        versions/<n>/       adapter_config.json + adapter_model.safetensors, one per learned conversation
        manifest.sqlite     what was learned: conversations, teacher notes (for replay), settings
        .lock               held by the one process allowed to change this user

A conversation is committed in this order: adapter written to a new version folder, manifest row
and version number committed in one SQLite transaction, then the `adapter` link swapped. A crash at
any point leaves the last committed version in use and nothing half-written is ever read.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from paramem.augment.notes import Notes
from paramem.errors import InputError

_USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$")

SCHEMA = """
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS conversations (
    position INTEGER PRIMARY KEY,      -- learning order
    id TEXT UNIQUE NOT NULL,
    content_hash TEXT NOT NULL,
    timestamp TEXT,
    qa_pairs INTEGER NOT NULL,         -- training pairs per epoch
    epochs INTEGER NOT NULL,           -- epochs kept (chosen on held-out reworded pairs)
    final_loss REAL NOT NULL,
    heldout_accuracy REAL,             -- on this conversation's held-out reworded yes/no pairs
    seconds REAL NOT NULL,
    adapter_version INTEGER NOT NULL,
    learned_at TEXT NOT NULL,
    notes TEXT NOT NULL,               -- the teacher's notes as JSON, replayed later
    text TEXT,                         -- raw conversation, only with --keep-conversations
    learning_rate REAL                 -- the rate kept (chosen on held-out pairs when several were tried)
);
"""
# Columns added after the first release, for manifests written before them.
ADDED_COLUMNS = {"learning_rate": "REAL"}


def paramem_home() -> Path:
    """$PARAMEM_HOME, else ~/.local/share/paramem."""
    default = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "paramem"
    return Path(os.environ.get("PARAMEM_HOME", default))


@dataclass(frozen=True)
class LearnedConversation:
    id: str
    content_hash: str
    timestamp: str | None
    qa_pairs: int
    epochs: int
    final_loss: float
    heldout_accuracy: float | None
    seconds: float
    adapter_version: int
    learned_at: str
    learning_rate: float | None = None  # None in manifests written before it was recorded


class UserLocked(InputError):
    pass


class UserMemory:
    """One user's memory folder. Reading needs no lock; changing it needs `lock()`."""

    def __init__(self, user: str, home: Path | None = None):
        if not _USER_NAME.match(user):
            raise InputError(f"invalid user name {user!r} (letters, digits, '_', '.', '@', '-')")
        self.user = user
        self.root = (home or paramem_home()) / "users" / user
        self._lock_file = None

    # -- existence and locking ---------------------------------------------------------------

    @property
    def exists(self) -> bool:
        return (self.root / "manifest.sqlite").exists()

    def require(self) -> UserMemory:
        if not self.exists:
            raise InputError(f"unknown user {self.user!r}: no memory under {self.root} (run `paramem remember`)")
        return self

    def lock(self) -> UserMemory:
        """Take this user's write lock, or fail at once with a clear message."""
        self.root.mkdir(parents=True, exist_ok=True)
        handle = open(self.root / ".lock", "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise UserLocked(
                f"user {self.user!r} is being updated by {holder}; try again when it finishes", path=self.root / ".lock"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"paramem pid {os.getpid()}")
        handle.flush()
        self._lock_file = handle
        return self

    def unlock(self) -> None:
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    def __enter__(self) -> UserMemory:
        return self.lock()

    def __exit__(self, *exc) -> None:
        self.unlock()

    # -- manifest ----------------------------------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        self.root.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.root / "manifest.sqlite")
        db.executescript(SCHEMA)
        present = {row[1] for row in db.execute("PRAGMA table_info(conversations)")}
        for column, kind in ADDED_COLUMNS.items():
            if column not in present:
                db.execute(f"ALTER TABLE conversations ADD COLUMN {column} {kind}")
        return db

    def settings(self) -> dict[str, Any]:
        if not self.exists:
            return {}
        with self._db() as db:
            return {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM settings")}

    def save_settings(self, values: dict[str, Any]) -> None:
        with self._db() as db:
            db.executemany(
                "INSERT OR REPLACE INTO settings VALUES (?, ?)", [(k, json.dumps(v)) for k, v in values.items()]
            )

    def learned(self) -> list[LearnedConversation]:
        if not self.exists:
            return []
        with self._db() as db:
            rows = db.execute(
                "SELECT id, content_hash, timestamp, qa_pairs, epochs, final_loss, heldout_accuracy,"
                " seconds, adapter_version, learned_at, learning_rate FROM conversations ORDER BY position"
            ).fetchall()
        return [LearnedConversation(*row) for row in rows]

    def learned_hashes(self) -> set[str]:
        return {c.content_hash for c in self.learned()}

    def notes(self) -> list[Notes]:
        """The teacher notes of every learned conversation, in learning order (for replay)."""
        if not self.exists:
            return []
        with self._db() as db:
            rows = db.execute("SELECT notes FROM conversations ORDER BY position").fetchall()
        return [Notes.from_dict(json.loads(row[0])) for row in rows]

    # -- adapter -----------------------------------------------------------------------------

    @property
    def adapter_dir(self) -> Path:
        return self.root / "adapter"

    def current_version(self) -> int | None:
        if not self.exists:
            return None
        with self._db() as db:
            row = db.execute("SELECT MAX(adapter_version) FROM conversations").fetchone()
        return row[0]

    def current_adapter(self) -> Path | None:
        """The committed adapter folder (the manifest, not the link, is the source of truth)."""
        version = self.current_version()
        return None if version is None else self.root / "versions" / str(version)

    def commit(self, model, record: LearnedConversation, notes: Notes, text: str | None) -> None:
        """Write the adapter and the manifest row for one learned conversation, crash-safely."""
        assert self._lock_file is not None, "commit() needs the user's lock"
        versions = self.root / "versions"
        versions.mkdir(parents=True, exist_ok=True)
        target = versions / str(record.adapter_version)
        tmp = versions / f".{record.adapter_version}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(target, ignore_errors=True)  # a leftover from a crash before its commit
        model.save_pretrained(tmp)
        os.replace(tmp, target)
        with self._db() as db:  # one transaction: the row and its version appear together
            db.execute(
                "INSERT INTO conversations (id, content_hash, timestamp, qa_pairs, epochs, final_loss,"
                " heldout_accuracy, seconds, adapter_version, learned_at, notes, text, learning_rate)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.id,
                    record.content_hash,
                    record.timestamp,
                    record.qa_pairs,
                    record.epochs,
                    record.final_loss,
                    record.heldout_accuracy,
                    record.seconds,
                    record.adapter_version,
                    record.learned_at,
                    json.dumps(notes.to_dict(), ensure_ascii=False),
                    text,
                    record.learning_rate,
                ),
            )
        self._point_adapter_link(target)
        self._drop_old_versions(keep=record.adapter_version)

    def repair(self) -> None:
        """After a crash: point the link at the committed version and drop uncommitted folders."""
        version = self.current_version()
        if version is not None:
            self._point_adapter_link(self.root / "versions" / str(version))
            self._drop_old_versions(keep=version)

    def _point_adapter_link(self, target: Path) -> None:
        link_tmp = self.root / ".adapter.link"
        if link_tmp.is_symlink() or link_tmp.exists():
            link_tmp.unlink()
        link_tmp.symlink_to(target.relative_to(self.root))
        os.replace(link_tmp, self.adapter_dir)

    def _drop_old_versions(self, keep: int) -> None:
        for folder in (self.root / "versions").iterdir():
            if folder.name != str(keep):
                shutil.rmtree(folder, ignore_errors=True)

    def bytes_stored(self) -> int:
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file() and not p.is_symlink())


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
