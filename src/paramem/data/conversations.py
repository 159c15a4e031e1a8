"""Conversations: the types, and the checks every format's loader (formats.py) shares.

A loader returns a list of `Conversation`s in the order they should be learned, or raises
`InputError` naming the file, the line where known, and the reason. Nothing else escapes.
"""

from __future__ import annotations

import bisect
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from paramem.errors import InputError

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Message:
    role: str  # "system", "user" or "assistant"
    content: str
    name: str | None = None  # the speaker's name where the source has one (LoCoMo, MSC)


@dataclass(frozen=True)
class Conversation:
    id: str
    messages: tuple[Message, ...]
    timestamp: str | None = None  # ISO 8601 where known
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def text(self) -> str:
        """The conversation as plain text, one `speaker: content` line per message."""
        return "\n".join(f"{m.name or m.role}: {m.content}" for m in self.messages)

    @property
    def content_hash(self) -> str:
        """Stable hash of what was said: the key for caches and for skipping already-learned ones."""
        payload = json.dumps([[m.role, m.name, m.content] for m in self.messages], ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------------------------------------
# Reading helpers


# Limits, each with its own message: a file this large is a mistake (a wrong path, a database dump),
# and one conversation this long would take the teacher and trainer hours.
MAX_FILE_BYTES = 1 << 30  # 1 GiB
MAX_CONVERSATIONS = 100_000  # per file
MAX_CONVERSATION_CHARS = 500_000  # about 125k tokens; a whole LoCoMo sample is ~100k characters


def check_file(path: Path) -> None:
    if not path.is_file():
        raise InputError("file not found", path=path)
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise InputError(
            f"file is {size / 2**30:.1f} GiB; paramem reads at most {MAX_FILE_BYTES >> 30} GiB (split it)", path=path
        )


def read_text(path: Path) -> str:
    check_file(path)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        line = path.read_bytes()[: error.start].count(b"\n") + 1
        raise InputError(f"not UTF-8 text ({error.reason} at byte {error.start})", path, line) from None


def json_lines(path: Path) -> Iterator[tuple[int, Any]]:
    """Yield (line number, parsed object) for each non-blank line of a JSONL file, streamed.

    Lines end at "\\n" only (read as bytes): U+2028, U+0085 and the other characters `str.splitlines`
    also splits at may stand unescaped inside a JSON string, so they belong to the line they are on."""
    check_file(path)
    with open(path, "rb") as lines:
        for number, raw in enumerate(lines, start=1):
            try:
                line = raw.decode("utf-8").removeprefix("\ufeff" if number == 1 else "")
            except UnicodeDecodeError as error:
                raise InputError(
                    f"not UTF-8 text ({error.reason} at byte {error.start} of the line)", path, number
                ) from None
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as error:
                raise InputError(f"invalid JSON ({error.msg}, column {error.colno})", path, number) from None


def json_list(path: Path, text: str, what: str) -> list[tuple[int, Any]]:
    """The items of a JSON document that is a list, each with the line it starts on, so that an error in
    a LoCoMo sample, a MaLP dialogue or a ChatGPT conversation names its line."""
    decoder = json.JSONDecoder()
    newlines = [i for i, char in enumerate(text) if char == "\n"]

    def line_of(offset: int) -> int:
        return bisect.bisect_right(newlines, offset - 1) + 1

    def skip(offset: int) -> int:
        while offset < len(text) and text[offset] in " \t\r\n\ufeff":
            offset += 1
        return offset

    def invalid(error: json.JSONDecodeError) -> InputError:
        return InputError(f"invalid JSON ({error.msg}, column {error.colno})", path, error.lineno)

    at = skip(0)
    if text[at : at + 1] != "[":
        try:
            json.loads(text)
        except json.JSONDecodeError as error:
            raise invalid(error) from None
        raise InputError(f"{what} is a JSON list", path, line_of(at))
    items: list[tuple[int, Any]] = []
    at = skip(at + 1)
    if text[at : at + 1] == "]":
        return items
    while True:
        try:
            item, end = decoder.raw_decode(text, at)
        except json.JSONDecodeError as error:
            raise invalid(error) from None
        items.append((line_of(at), item))
        at = skip(end)
        if text[at : at + 1] == ",":
            at = skip(at + 1)
        elif text[at : at + 1] == "]" and skip(at + 1) == len(text):
            return items
        else:
            raise InputError("invalid JSON (expected ',' or ']' after an item)", path, line_of(at))


def require(condition: bool, reason: str, path: Path, line: int | None) -> None:
    if not condition:
        raise InputError(reason, path, line)


def string_field(value: Any, what: str, path: Path, line: int | None) -> str:
    require(isinstance(value, str), f"{what} must be a string", path, line)
    return value


def finish(
    conversations: list[Conversation], path: Path, lines: list[int | None], sort_by_time: bool = True
) -> list[Conversation]:
    """Shared checks: something to learn, no empty conversation, unique ids, the limits, timestamp order.
    Each conversation remembers where it came from (`metadata["file"]`, `["line"]`), for later errors."""
    require(bool(conversations), "no conversations in file", path, None)
    require(
        len(conversations) <= MAX_CONVERSATIONS,
        f"{len(conversations)} conversations; at most {MAX_CONVERSATIONS} per file (split it)",
        path,
        None,
    )
    seen: dict[str, int | None] = {}
    for conversation, line in zip(conversations, lines):
        conversation.metadata.update(file=str(path), line=line)
        length = sum(len(m.content) for m in conversation.messages)
        require(
            length <= MAX_CONVERSATION_CHARS,
            f"conversation {conversation.id!r} has {length} characters; at most {MAX_CONVERSATION_CHARS} "
            "(split it into sessions)",
            path,
            line,
        )
        require(
            any(m.content.strip() for m in conversation.messages),
            f"conversation {conversation.id!r} is empty",
            path,
            line,
        )
        if conversation.id in seen:
            first = seen[conversation.id]
            where = f" (first on line {first})" if first else ""
            raise InputError(f"duplicate conversation id {conversation.id!r}{where}", path, line)
        seen[conversation.id] = line
    # Line order is learning order unless every conversation carries a timestamp.
    if sort_by_time and all(c.timestamp for c in conversations):
        conversations = sorted(conversations, key=lambda c: parse_time(c.timestamp))
    return conversations


def parse_time(stamp: str | None) -> datetime:
    assert stamp is not None
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def check_timestamp(value: Any, path: Path, line: int | None) -> str | None:
    if value is None:
        return None
    stamp = string_field(value, "timestamp", path, line)
    try:
        parse_time(stamp)
    except ValueError:
        raise InputError(f"timestamp {stamp!r} is not ISO 8601", path, line) from None
    return stamp
