"""One user's memory folder (`UserMemory`): reading it under a shared lock per version, committing a
learned or forgotten conversation crash-safely, and repairing what a crash left. The folder's layout
and the order of a commit are in the package's docstring (store/__init__.py)."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from paramem.config import Form
from paramem.data.notes import Notes
from paramem.errors import InputError, user_file_problem
from paramem.files import fsync_dir, fsync_tree, paramem_home, write_atomic_bytes
from paramem.store.manifest import NOTES_QUERY, LearnedConversation, connect, given_out, notes_json, now_iso, set_notes
from paramem.store.milp_slot import MilpSlot
from paramem.store.texts import Texts
from paramem.store.tokens import Tokens

_USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$")


class UserLocked(InputError):
    pass


class VersionGone(InputError):
    """An adapter version asked for by number was replaced and removed."""


class UserMemory:
    """One user's memory folder. Reading needs no lock; changing it needs `lock()`."""

    def __init__(self, user: str, home: Path | None = None):
        if not isinstance(user, str) or not _USER_NAME.fullmatch(user):
            raise InputError(f"invalid user name {user!r} (letters, digits, '_', '.', '@', '-'; at most 128)")
        users = (home or paramem_home()) / "users"
        if not (users / user).exists() and users.is_dir():
            twin = next((p.name for p in users.iterdir() if p.name.casefold() == user.casefold()), None)
            if twin is not None:
                raise InputError(
                    f"user {user!r} differs from the existing user {twin!r} only in case; names "
                    "are told apart by more than case (case-insensitive file systems share folders)"
                )
        self.user = user
        self.root = users / user
        self.loaded_version: int | None = None  # the adapter version `answer.load_memory` loaded
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

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.sqlite"

    @property
    def locked(self) -> bool:
        """Whether this object holds the user's lock (`with UserMemory(...)`)."""
        return self._lock_file is not None

    def being_changed(self) -> bool:
        """Whether some process (this one included) holds the user's write lock right now."""
        if self.locked:
            return True
        if not (self.root / ".lock").exists():
            return False
        with open(self.root / ".lock", "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False

    def create(self) -> None:
        """Make the user's folder and manifest, if they are not there yet."""
        self.db().close()

    def db(self) -> sqlite3.Connection:
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            return connect(self.manifest)
        except sqlite3.DatabaseError as error:
            raise self.damaged(self.manifest, error) from None

    def damaged(self, path: Path, error: BaseException) -> InputError:
        """The one-line error for a file of this memory that cannot be read; nothing is overwritten."""
        return InputError(
            f"{user_file_problem(error)}; paramem changed nothing. Restore the file from a backup, "
            f"or remove {self.root} to start {self.user!r}'s memory over",
            path=path,
        )

    def rows(self, query: str) -> list[tuple]:
        """Run a read query, turning a damaged manifest into one clear line."""
        try:
            with self.db() as db:
                return db.execute(query).fetchall()
        except sqlite3.DatabaseError as error:
            raise self.damaged(self.manifest, error) from None

    def settings(self) -> dict[str, Any]:
        if not self.exists:
            return {}
        try:
            return {k: json.loads(v) for k, v in self.rows("SELECT key, value FROM settings")}
        except ValueError as error:
            raise self.damaged(self.manifest, error) from None

    @property
    def form(self) -> Form:
        """What this memory is made of (sequential until something else is learned)."""
        return Form(self.settings().get("form", Form.SEQUENTIAL))

    def save_settings(self, values: dict[str, Any]) -> None:
        with self.db() as db:
            db.executemany(
                "INSERT OR REPLACE INTO settings VALUES (?, ?)", [(k, json.dumps(v)) for k, v in values.items()]
            )

    def learned(self) -> list[LearnedConversation]:
        if not self.exists:
            return []
        columns = ", ".join(f.name for f in fields(LearnedConversation))
        rows = self.rows(f"SELECT {columns} FROM conversations ORDER BY position")
        return [LearnedConversation(*row) for row in rows]

    def notes(self) -> list[Notes]:
        """The teacher notes of every learned conversation, in learning order (for replay)."""
        if not self.exists:
            return []
        try:
            return [Notes.from_dict(json.loads(row[0])) for row in self.rows(NOTES_QUERY)]
        except (ValueError, KeyError, TypeError) as error:
            raise self.damaged(self.manifest, error) from None

    def update_notes(self, notes: list[Notes]) -> None:
        """Write back learned conversations' notes changed after they were learned (negatives a later
        conversation made untrue, or the memory's own in the teacher's place), for later replay."""
        assert self._lock_file is not None, "update_notes() needs the user's lock"
        with self.db() as db:
            set_notes(db, notes)

    # -- distillation targets ---------------------------------------------------------------

    def _targets_file(self, conversation_id: str) -> Path:
        return self.root / "targets" / f"{hashlib.sha256(conversation_id.encode()).hexdigest()[:32]}.json.gz"

    def save_targets(self, conversation_id: str, data: bytes) -> None:
        """The teacher's targets of one conversation (objective distill), replayed in later runs;
        written (and flushed) before the conversation's manifest row."""
        assert self._lock_file is not None, "save_targets() needs the user's lock"
        write_atomic_bytes(self._targets_file(conversation_id), data)

    def drop_targets(self, conversation_id: str) -> None:
        self._targets_file(conversation_id).unlink(missing_ok=True)

    def targets(self, conversation_id: str) -> bytes | None:
        path = self._targets_file(conversation_id)
        return path.read_bytes() if path.exists() else None

    # -- adapter -----------------------------------------------------------------------------

    @property
    def adapter_dir(self) -> Path:
        return self.root / "adapter"

    @property
    def versions(self) -> Path:
        return self.root / "versions"

    def current_version(self) -> int | None:
        if not self.exists:
            return None
        return self.rows("SELECT MAX(adapter_version) FROM conversations")[0][0]

    def next_version(self) -> int:
        """The number of the next version to commit: above every version this memory ever had, so a
        number is never given twice, even after every conversation was forgotten."""
        last = int(self.rows("SELECT value FROM lineage WHERE key = 'last_version'")[0][0])
        return max(last, self.current_version() or 0) + 1

    def store_id(self) -> str | None:
        """This memory's random id (None before it exists); with a version number, it names that
        version uniquely for the memory's life, across forgetting and across deleting the user."""
        if not self.exists:
            return None
        return self.rows("SELECT value FROM lineage WHERE key = 'store_id'")[0][0]

    def current_adapter(self) -> Path | None:
        """The committed adapter folder (the manifest, not the link, is the source of truth)."""
        version = self.current_version()
        return None if version is None else self.versions / str(version)

    @contextmanager
    def reading(self, version: int | None = None) -> Iterator[Path]:
        """An adapter version's folder (default: the current one), kept on disk while the block runs:
        a shared lock on the version that the writer's clean-up respects, in this process and every
        other. A given `version` that is already gone raises `VersionGone`."""
        while True:
            wanted = self.current_version() if version is None else version
            if wanted is None:
                raise InputError(f"user {self.user!r} has no learned conversations yet")
            self.versions.mkdir(parents=True, exist_ok=True)
            with open(self.versions / f"{wanted}.lock", "a+") as lock:
                fcntl.flock(lock, fcntl.LOCK_SH)
                folder = self.versions / str(wanted)
                if folder.is_dir():
                    yield folder
                    return
            if version is not None:
                raise VersionGone(f"adapter version {version} of user {self.user!r} was replaced", path=folder)
            # else the writer removed the current version between our two reads: read again

    def _write_version(self, model, version: int) -> Path:
        """The model's memory (adapter or cartridges) in a new version folder, flushed to disk."""
        self.versions.mkdir(parents=True, exist_ok=True)
        target = self.versions / str(version)
        tmp = self.versions / f".{version}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(target, ignore_errors=True)  # a leftover from a crash before its commit
        model.save_pretrained(tmp)
        fsync_tree(tmp)  # on disk before the manifest may point at it (a power cut keeps both or neither)
        os.replace(tmp, target)
        fsync_dir(self.versions)
        return target

    def commit(self, model, record: LearnedConversation, notes: Notes, drop_text: bool = False) -> None:
        """Write the adapter and the manifest row for one learned conversation, crash-safely; with
        `drop_text` (--keep-text until-consolidated), its text goes in the same transaction."""
        assert self._lock_file is not None, "commit() needs the user's lock"
        target = self._write_version(model, record.adapter_version)
        with self.db() as db:  # one transaction: the row and its version appear together
            row = {**asdict(record), "notes": notes_json(notes)}
            db.execute(
                f"INSERT INTO conversations ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                tuple(row.values()),
            )
            if drop_text:
                db.execute("DELETE FROM texts WHERE id = ?", (record.id,))
            given_out(db, record.adapter_version)
        self._point_adapter_link(target)
        self._drop_old_versions(keep=record.adapter_version)

    def commit_forgetting(
        self, model, forgotten_id: str, kept: list[LearnedConversation], notes: list[Notes] = ()
    ) -> None:
        """Replace the memory by one without `forgotten_id`, crash-safely, as `commit` adds one: the new
        version written first, then in one transaction the forgotten row (its notes with it) deleted,
        the kept rows rewritten to point at the new version, and the forgetting recorded (id and date
        only). `model` is None when nothing is kept; `notes`, the kept conversations' notes as they
        were relearned, are written in the same transaction. `secure_delete` overwrites the deleted row."""
        assert self._lock_file is not None, "commit_forgetting() needs the user's lock"
        version = self.next_version()
        target = self._write_version(model, version) if model is not None else None
        with self.db() as db:
            db.execute("DELETE FROM conversations WHERE id = ?", (forgotten_id,))
            db.execute("DELETE FROM texts WHERE id = ?", (forgotten_id,))
            for r in kept:
                db.execute(
                    "UPDATE conversations SET qa_pairs = ?, epochs = ?, final_loss = ?, heldout_accuracy = ?,"
                    " seconds = ?, adapter_version = ?, learning_rate = ? WHERE id = ?",
                    (r.qa_pairs, r.epochs, r.final_loss, r.heldout_accuracy, r.seconds, version, r.learning_rate, r.id),
                )
            set_notes(db, notes)
            db.execute("INSERT INTO forgotten VALUES (?, ?)", (forgotten_id, now_iso()))
            given_out(db, version)
        self.drop_targets(forgotten_id)
        if target is not None:
            self._point_adapter_link(target)
            self._drop_old_versions(keep=version)
        else:  # nothing left to remember: no adapter at all
            if self.adapter_dir.is_symlink():
                self.adapter_dir.unlink()
            self._drop_old_versions(keep=-1)

    def forgotten(self) -> list[tuple[str, str]]:
        """(conversation id, date) of every forgetting, oldest first."""
        return (
            [tuple(row) for row in self.rows("SELECT id, forgotten_at FROM forgotten ORDER BY rowid")]
            if self.exists
            else []
        )

    @property
    def texts(self) -> Texts:
        """This user's conversations as text, indexed for retrieval (texts.py)."""
        return Texts(self)

    @property
    def tokens(self) -> Tokens:
        """This user's bearer token for `paramem serve` (tokens.py)."""
        return Tokens(self)

    @property
    def milp(self) -> MilpSlot:
        """This user's MiLP memory, kept beside the sequential one (milp_slot.py)."""
        return MilpSlot(self)

    def delete(self) -> None:
        """Remove every file of this user (the caller removes their teacher-notes cache entries first)."""
        assert self._lock_file is not None, "delete() needs the user's lock"
        shutil.rmtree(self.root)

    def repair(self) -> None:
        """After a crash: point the link at the committed version and drop uncommitted folders."""
        version = self.current_version()
        if version is not None:
            self._point_adapter_link(self.versions / str(version))
            self._drop_old_versions(keep=version)

    def _point_adapter_link(self, target: Path) -> None:
        link_tmp = self.root / ".adapter.link"
        if link_tmp.is_symlink() or link_tmp.exists():
            link_tmp.unlink()
        link_tmp.symlink_to(target.relative_to(self.root))
        os.replace(link_tmp, self.adapter_dir)
        fsync_dir(self.root)

    def _drop_old_versions(self, keep: int) -> None:
        """Remove every version folder but `keep`, except those a reader holds (left for next time),
        and unfinished `.N.tmp` folders."""
        for entry in self.versions.iterdir():
            name = entry.name
            if name in (str(keep), f"{keep}.lock"):
                continue
            if name.startswith("."):  # an unfinished write; only the writer (us) makes these
                shutil.rmtree(entry, ignore_errors=True)
                continue
            version = name.removesuffix(".lock")
            with open(self.versions / f"{version}.lock", "a+") as lock:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a reader holds it
                shutil.rmtree(self.versions / version, ignore_errors=True)
                (self.versions / f"{version}.lock").unlink(missing_ok=True)


def users(home: Path | None = None) -> list[str]:
    """The users with a memory in the store, by name."""
    folder = (home or paramem_home()) / "users"
    if not folder.is_dir():
        return []
    return sorted(
        p.name for p in folder.iterdir() if (p / "manifest.sqlite").exists() or (p / "milp" / "current.json").exists()
    )
