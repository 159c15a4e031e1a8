"""The manifest of a user's memory, `manifest.sqlite`: what was learned (conversations, teacher notes
for replay, settings), what was forgotten (ids and dates only), and the lineage that makes every
version's name unique for the memory's whole life."""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from paramem.data.notes import Notes

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
    text TEXT,                         -- unused since the texts table (was: raw text, --keep-conversations)
    learning_rate REAL,                -- the rate kept (chosen on held-out pairs when several were tried)
    teacher_seconds REAL,              -- objective distill: the teacher's reading, queries and answers
    teacher_prefill_seconds REAL,      -- of which reading the conversation once (its keys and values)
    teacher_writing_seconds REAL,      -- of which writing its own self-study queries
    teacher_queries INTEGER            -- queries the teacher answered (the query budget spent)
);
-- The conversations as text, indexed for retrieval the moment they arrive (texts.py): kept with
-- --keep-text always, deleted once learned with until-consolidated, never written with never.
CREATE TABLE IF NOT EXISTS texts (
    position INTEGER PRIMARY KEY,      -- arrival order
    id TEXT UNIQUE NOT NULL,
    content_hash TEXT NOT NULL,
    timestamp TEXT,
    messages TEXT NOT NULL,            -- JSON: [[role, name, content], ...]
    indexed_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS forgotten (id TEXT NOT NULL, forgotten_at TEXT NOT NULL);  -- never the content
-- What makes a memory's versions unique for its whole life: a random id made with the manifest (a
-- deleted user's next memory gets another) and the last version number given out, which forgetting
-- never takes back. A server caches loaded memories by (store_id, version).
CREATE TABLE IF NOT EXISTS lineage (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
# Written once, when the manifest is made (or first opened by this version): not on every read, since
# an insert takes SQLite's write lock even when it inserts nothing.
LINEAGE = """
INSERT OR IGNORE INTO lineage VALUES ('store_id', lower(hex(randomblob(16))));
INSERT OR IGNORE INTO lineage VALUES ('last_version', '0');
"""
# Columns added after the first release, for manifests written before them.
ADDED_COLUMNS = {
    "learning_rate": "REAL",
    "teacher_seconds": "REAL",
    "teacher_prefill_seconds": "REAL",
    "teacher_writing_seconds": "REAL",
    "teacher_queries": "INTEGER",
}


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
    teacher_seconds: float | None = None  # objective distill: computing the teacher's targets, of which
    teacher_prefill_seconds: float | None = None  # reading the conversation once,
    teacher_writing_seconds: float | None = None  # writing self-study queries (the rest is answering)
    teacher_queries: int | None = None  # queries answered: the query budget spent on this conversation


NOTES_QUERY = "SELECT notes FROM conversations ORDER BY position"


def notes_json(notes: Notes) -> str:
    """One conversation's notes as the `notes` column holds them."""
    return json.dumps(notes.to_dict(), ensure_ascii=False)


def set_notes(db: sqlite3.Connection, notes: list[Notes]) -> None:
    """Rewrite learned conversations' notes, in the caller's transaction."""
    rows = [(notes_json(n), n.conversation_id) for n in notes]
    db.executemany("UPDATE conversations SET notes = ? WHERE id = ?", rows)


def connect(path: Path) -> sqlite3.Connection:
    """The manifest at `path`, made or brought up to date; `sqlite3.DatabaseError` when damaged."""
    db = sqlite3.connect(path)
    db.execute("PRAGMA secure_delete = ON")  # deleted rows are overwritten, not left in free pages
    db.executescript(SCHEMA)
    if db.execute("SELECT COUNT(*) FROM lineage").fetchone()[0] < 2:
        db.executescript(LINEAGE)
    present = {row[1] for row in db.execute("PRAGMA table_info(conversations)")}
    for column, kind in ADDED_COLUMNS.items():
        if column not in present:
            db.execute(f"ALTER TABLE conversations ADD COLUMN {column} {kind}")
    return db


def given_out(db: sqlite3.Connection, version: int) -> None:
    """Record `version` as given out, in the transaction that commits it."""
    db.execute(
        "UPDATE lineage SET value = CAST(MAX(CAST(value AS INTEGER), ?) AS TEXT) WHERE key = 'last_version'",
        (version,),
    )


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
