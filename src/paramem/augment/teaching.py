"""Asking a teacher for each conversation's notes, through a cache shared by users and reruns;
negatives that contradict the conversation are dropped."""

from __future__ import annotations

import json
import re
from pathlib import Path

from paramem.augment.teachers.base import PROMPT_VERSION, Teacher
from paramem.augment.teachers.endpoint import OpenAITeacher
from paramem.data.conversations import Conversation
from paramem.data.notes import Notes
from paramem.errors import InputError, user_file_problem
from paramem.files import write_atomic


class NotesCache:
    """Teacher output on disk, keyed by teacher, prompt version and conversation content hash (not by
    user: two users with the same conversation share an entry, see `remove`)."""

    def __init__(self, root: Path):
        self.root = root

    def _path(self, teacher: Teacher, conversation: Conversation) -> Path:
        key = re.sub(r"[^\w.-]+", "_", teacher.name)
        return self.root / f"v{PROMPT_VERSION}" / key / f"{conversation.content_hash}.json"

    def get(self, teacher: Teacher, conversation: Conversation) -> Notes | None:
        path = self._path(teacher, conversation)
        if not path.exists():
            return None
        try:
            notes = Notes.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (ValueError, KeyError, TypeError) as error:
            raise InputError(
                f"{user_file_problem(error)}; delete it (or run with --regenerate-notes) and the "
                "teacher writes the notes again",
                path=path,
            ) from None
        notes.conversation_id = conversation.id  # same content may arrive under another id
        return notes

    def remove(self, content_hash: str) -> int:
        """Delete every cached entry for one conversation's content (all teachers, all prompt versions),
        for `forget` and user deletion; returns how many. Another user with the same conversation
        keeps their notes (their manifest holds them) and only loses the shortcut."""
        entries = list(self.root.glob(f"v*/*/{content_hash}.json"))
        for entry in entries:
            entry.unlink(missing_ok=True)
        return len(entries)

    def put(self, teacher: Teacher, conversation: Conversation, notes: Notes) -> None:
        write_atomic(self._path(teacher, conversation), json.dumps(notes.to_dict(), ensure_ascii=False, indent=1))


def augment(
    conversations: list[Conversation], teacher: Teacher, cache: NotesCache | None, regenerate: bool = False
) -> list[Notes]:
    """Notes for every conversation, from the cache where possible. Each conversation's notes are
    cached as soon as they exist, so a failure or Ctrl-C loses only those in progress; a concurrent
    teacher (openai) is asked for all missing ones at once."""
    found = {c.id: None if (regenerate or cache is None) else cache.get(teacher, c) for c in conversations}
    missing = [c for c in conversations if found[c.id] is None]

    def keep(conversation: Conversation, notes: Notes) -> None:
        if cache is not None:
            cache.put(teacher, conversation, notes)
        found[conversation.id] = notes

    if isinstance(teacher, OpenAITeacher):
        teacher.notes_many(missing, keep)
    else:
        for conversation in missing:
            keep(conversation, teacher.notes(conversation))
    return [found[c.id] for c in conversations]
