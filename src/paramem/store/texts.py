"""A user's conversations as text, in the manifest's `texts` table: written the moment a conversation
arrives, before any model loads, so that retrieval answers from it within seconds while the memory
learns it in the background (issue 38). How long a text stays is the user's `--keep-text` choice."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import TYPE_CHECKING

from paramem.data.conversations import Conversation, Message
from paramem.errors import InputError
from paramem.store.manifest import now_iso

if TYPE_CHECKING:  # the memory holds its texts; this module needs only its manifest
    from paramem.store.user import UserMemory


class State(StrEnum):
    """Where a conversation stands in a user's memory."""

    INDEXED = "indexed"  # its text answers through retrieval; the memory has not learned it yet
    CONSOLIDATING = "consolidating"  # indexed, and a learning run holds the user's lock
    CONSOLIDATED = "consolidated"  # learned into the memory (its text kept or not)


class Texts:
    def __init__(self, memory: UserMemory):
        self.memory = memory

    def add(self, conversations: list[Conversation]) -> list[str]:
        """Index the conversations not stored yet, in one transaction; returns the ids added. Safe
        beside a learning run without the user's lock (a server indexes an upload while the last one
        is being learned): SQLite serialises the writes, and a run learns only what it read at its
        start. A stored id with other content is refused (`InputError`), and nothing is added."""
        stored = self._hashes()
        for conversation in conversations:
            if stored.get(conversation.id, conversation.content_hash) != conversation.content_hash:
                raise InputError(f"conversation {conversation.id!r} is already stored with different content")
        new = [c for c in conversations if c.id not in stored]
        if not new:
            return []
        with self.memory.db() as db:
            db.executemany(
                "INSERT INTO texts (id, content_hash, timestamp, messages, indexed_at) VALUES (?, ?, ?, ?, ?)",
                [(c.id, c.content_hash, c.timestamp, _messages_json(c), now_iso()) for c in new],
            )
        return [c.id for c in new]

    def drop(self, ids: list[str]) -> None:
        """Delete these conversations' texts (the manifest overwrites deleted rows: `secure_delete`)."""
        assert self.memory.locked, "texts.drop() needs the user's lock"
        with self.memory.db() as db:
            db.executemany("DELETE FROM texts WHERE id = ?", [(i,) for i in ids])

    def forget(self, conversation_id: str) -> str:
        """Delete a conversation that is indexed but not learned, and record its forgetting (id and
        date only) in the same transaction; returns its content hash."""
        assert self.memory.locked, "texts.forget() needs the user's lock"
        with self.memory.db() as db:
            [(content_hash,)] = db.execute("SELECT content_hash FROM texts WHERE id = ?", (conversation_id,)).fetchall()
            db.execute("DELETE FROM texts WHERE id = ?", (conversation_id,))
            db.execute("INSERT INTO forgotten VALUES (?, ?)", (conversation_id, now_iso()))
        return content_hash

    def ids(self) -> set[str]:
        return set(self._hashes())

    def _hashes(self) -> dict[str, str]:
        if not self.memory.exists:
            return {}
        return dict(self.memory.rows("SELECT id, content_hash FROM texts"))

    def timestamps(self) -> dict[str, str | None]:
        """Each stored conversation's timestamp by id, in arrival order (its turns not read)."""
        if not self.memory.exists:
            return {}
        return dict(self.memory.rows("SELECT id, timestamp FROM texts ORDER BY position"))

    def conversations(self) -> list[Conversation]:
        """Every stored conversation, in arrival order."""
        if not self.memory.exists:
            return []
        rows = self.memory.rows("SELECT id, timestamp, messages FROM texts ORDER BY position")
        try:
            return [
                Conversation(
                    cid, tuple(Message(role, content, name) for role, name, content in json.loads(messages)), ts
                )
                for cid, ts, messages in rows
            ]
        except (ValueError, TypeError) as error:
            raise self.memory.damaged(self.memory.manifest, error) from None

    def waiting(self) -> list[Conversation]:
        """The stored conversations the memory has not learned yet: the next learning run's work."""
        learned = {record.id for record in self.memory.learned()}
        return [c for c in self.conversations() if c.id not in learned]

    def states(self) -> dict[str, State]:
        """Each conversation's state: the learned ones in learning order, then those waiting."""
        states = {record.id: State.CONSOLIDATED for record in self.memory.learned()}
        waiting = State.CONSOLIDATING if self.memory.being_changed() else State.INDEXED
        states.update({cid: waiting for cid in self.timestamps() if cid not in states})
        return states


def _messages_json(conversation: Conversation) -> str:
    return json.dumps([[m.role, m.name, m.content] for m in conversation.messages], ensure_ascii=False)
