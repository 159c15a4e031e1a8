"""Conversations: the types, the loaders for each supported format, and their validation.

Every loader returns a list of `Conversation`s in the order they should be learned, or raises
`InputError` naming the file, the line where known, and the reason. Nothing else escapes.

Formats:
  jsonl     paramem's own (DESIGN.md): {"id", "timestamp"?, "messages": [{"role", "content"}]} a line
  sharegpt  {"id"?, "conversations": [{"from", "value"}]}, a JSON list or JSONL
  chatgpt   a ChatGPT data export `conversations.json` (a list of {title, create_time, mapping})
  locomo    LoCoMo: each dated session of each sample becomes one conversation, in date order
  msc       Multi-Session Chat: each episode's previous sessions and its current one
  malp      MaLP medical dialogues: a list of dialogues of rounds {"i": {"User", "Assistant"}}
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
FORMATS = ("jsonl", "sharegpt", "chatgpt", "locomo", "msc", "malp")


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


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise InputError("file not found", path=path)
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise InputError(
            f"file is {size / 2**30:.1f} GiB; paramem reads at most {MAX_FILE_BYTES >> 30} GiB (split it)", path=path
        )


def _read_text(path: Path) -> str:
    _check_file(path)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        line = path.read_bytes()[: error.start].count(b"\n") + 1
        raise InputError(f"not UTF-8 text ({error.reason} at byte {error.start})", path, line) from None


def _json_lines(path: Path) -> Iterator[tuple[int, Any]]:
    """Yield (line number, parsed object) for each non-blank line of a JSONL file, streamed.

    Lines end at "\\n" only (read as bytes): U+2028, U+0085 and the other characters `str.splitlines`
    also splits at may stand unescaped inside a JSON string, so they belong to the line they are on."""
    _check_file(path)
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


def _json_list(path: Path, text: str, what: str) -> list[tuple[int, Any]]:
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


def _require(condition: bool, reason: str, path: Path, line: int | None) -> None:
    if not condition:
        raise InputError(reason, path, line)


def _string(value: Any, what: str, path: Path, line: int | None) -> str:
    _require(isinstance(value, str), f"{what} must be a string", path, line)
    return value


def _finish(
    conversations: list[Conversation], path: Path, lines: list[int | None], sort_by_time: bool = True
) -> list[Conversation]:
    """Shared checks: something to learn, no empty conversation, unique ids, the limits, timestamp order.
    Each conversation remembers where it came from (`metadata["file"]`, `["line"]`), for later errors."""
    _require(bool(conversations), "no conversations in file", path, None)
    _require(
        len(conversations) <= MAX_CONVERSATIONS,
        f"{len(conversations)} conversations; at most {MAX_CONVERSATIONS} per file (split it)",
        path,
        None,
    )
    seen: dict[str, int | None] = {}
    for conversation, line in zip(conversations, lines):
        conversation.metadata.update(file=str(path), line=line)
        length = sum(len(m.content) for m in conversation.messages)
        _require(
            length <= MAX_CONVERSATION_CHARS,
            f"conversation {conversation.id!r} has {length} characters; at most {MAX_CONVERSATION_CHARS} "
            "(split it into sessions)",
            path,
            line,
        )
        _require(
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
        conversations = sorted(conversations, key=lambda c: _parse_time(c.timestamp))
    return conversations


def _parse_time(stamp: str | None) -> datetime:
    assert stamp is not None
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _check_timestamp(value: Any, path: Path, line: int | None) -> str | None:
    if value is None:
        return None
    stamp = _string(value, "timestamp", path, line)
    try:
        _parse_time(stamp)
    except ValueError:
        raise InputError(f"timestamp {stamp!r} is not ISO 8601", path, line) from None
    return stamp


# ---------------------------------------------------------------------------------------------
# Loaders, one per format


def load_jsonl(path: Path) -> list[Conversation]:
    conversations, lines = [], []
    for line, record in _json_lines(path):
        _require(isinstance(record, dict), "each line must be a JSON object", path, line)
        _require("id" in record, "missing 'id'", path, line)
        _require(
            isinstance(record["id"], (str, int))
            and not isinstance(record["id"], bool)
            and str(record["id"]).strip() != "",
            "'id' must be a non-empty string",
            path,
            line,
        )
        raw = record.get("messages")
        _require(isinstance(raw, list), "missing 'messages' list", path, line)
        _require(bool(raw), f"conversation {record['id']!r} is empty", path, line)
        messages = []
        for index, message in enumerate(raw):
            _require(isinstance(message, dict), f"message {index} must be an object", path, line)
            _require("role" in message, f"message {index}: missing 'role'", path, line)
            _require("content" in message, f"message {index}: missing 'content'", path, line)
            role = message["role"]
            _require(role in ROLES, f"message {index}: role must be one of {', '.join(ROLES)}", path, line)
            content = _string(message["content"], f"message {index}: 'content'", path, line)
            messages.append(Message(role=role, content=content))
        conversations.append(
            Conversation(
                id=str(record["id"]),
                messages=tuple(messages),
                timestamp=_check_timestamp(record.get("timestamp"), path, line),
            )
        )
        lines.append(line)
    return _finish(conversations, path, lines)


SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "bard": "assistant",
    "system": "system",
}


def load_sharegpt(path: Path) -> list[Conversation]:
    if _head(path).lstrip().startswith("["):
        records = _json_list(path, _read_text(path), "a ShareGPT document")
    else:
        records = list(_json_lines(path))
    conversations, lines = [], []
    for index, (line, record) in enumerate(records):
        where = f"item {index}: "
        _require(
            isinstance(record, dict) and isinstance(record.get("conversations"), list),
            f"{where}missing 'conversations' list",
            path,
            line,
        )
        messages = []
        for turn in record["conversations"]:
            _require(
                isinstance(turn, dict) and "from" in turn and "value" in turn,
                f"{where}each turn needs 'from' and 'value'",
                path,
                line,
            )
            role = SHAREGPT_ROLES.get(str(turn["from"]).lower())
            _require(role is not None, f"{where}unknown speaker {turn['from']!r}", path, line)
            messages.append(Message(role=role, content=_string(turn["value"], f"{where}'value'", path, line)))
        _require(bool(messages), f"{where}conversation is empty", path, line)
        conversation_id = str(record.get("id", index))
        conversations.append(Conversation(id=conversation_id, messages=tuple(messages)))
        lines.append(line)
    return _finish(conversations, path, lines)


def _chatgpt_messages(mapping: dict, current: str | None, where: str, path: Path, line: int) -> list[Message]:
    """Walk the export's tree from the current node up to the root: the branch the user last saw."""
    if current is None:  # older exports: take the last leaf
        leaves = [key for key, node in mapping.items() if not node.get("children")]
        current = leaves[-1] if leaves else None
    chain, seen = [], set()
    while current is not None:
        _require(current in mapping and current not in seen, f"{where}broken 'mapping' tree", path, line)
        seen.add(current)
        node = mapping[current]
        _require(isinstance(node, dict), f"{where}broken 'mapping' tree", path, line)
        chain.append(node.get("message"))
        current = node.get("parent")
    messages = []
    for message in reversed(chain):
        if not isinstance(message, dict):
            continue
        role = (message.get("author") or {}).get("role")
        parts = (message.get("content") or {}).get("parts") or []
        text = "\n".join(part for part in parts if isinstance(part, str)).strip()
        if role in ("user", "assistant") and text:
            messages.append(Message(role=role, content=text))
    return messages


def load_chatgpt(path: Path) -> list[Conversation]:
    items = _json_list(path, _read_text(path), "a ChatGPT export")
    conversations, lines = [], []
    for index, (line, item) in enumerate(items):
        where = f"conversation {index}: "
        _require(
            isinstance(item, dict) and isinstance(item.get("mapping"), dict), f"{where}missing 'mapping'", path, line
        )
        messages = _chatgpt_messages(item["mapping"], item.get("current_node"), where, path, line)
        _require(bool(messages), f"{where}conversation is empty", path, line)
        created = item.get("create_time")
        stamp = datetime.fromtimestamp(created).astimezone().isoformat() if isinstance(created, (int, float)) else None
        conversations.append(
            Conversation(
                id=str(item.get("conversation_id") or item.get("id") or index),
                messages=tuple(messages),
                timestamp=stamp,
                metadata={"title": item.get("title")},
            )
        )
        lines.append(line)
    return _finish(conversations, path, lines)


LOCOMO_DATE_FORMAT = "%I:%M %p on %d %B, %Y"  # "1:56 pm on 8 May, 2023"


def load_locomo(path: Path) -> list[Conversation]:
    samples = _json_list(path, _read_text(path), "a LoCoMo file")
    conversations, lines = [], []
    for index, (line, sample) in enumerate(samples):
        where = f"sample {index}: "
        _require(
            isinstance(sample, dict) and isinstance(sample.get("conversation"), dict),
            f"{where}missing 'conversation'",
            path,
            line,
        )
        body = sample["conversation"]
        sample_id = str(sample.get("sample_id", index))
        speaker_a = body.get("speaker_a")
        sessions = []
        for key, turns in body.items():
            if not (key.startswith("session_") and key[8:].isdigit()):
                continue
            number = int(key[8:])
            _require(isinstance(turns, list), f"{where}{key} must be a list", path, line)
            messages = []
            for turn in turns:
                _require(
                    isinstance(turn, dict) and isinstance(turn.get("text"), str),
                    f"{where}{key}: each turn needs 'speaker' and 'text'",
                    path,
                    line,
                )
                text = turn["text"]
                if turn.get("blip_caption"):  # shared photos are described by a caption
                    text = f"{text} [shares a photo of {turn['blip_caption']}]"
                role = "user" if turn.get("speaker") == speaker_a else "assistant"
                messages.append(Message(role=role, content=text, name=turn.get("speaker")))
            if not messages:
                continue
            raw_date = body.get(f"{key}_date_time")
            stamp = None
            if isinstance(raw_date, str):
                try:
                    stamp = datetime.strptime(raw_date.strip(), LOCOMO_DATE_FORMAT).isoformat()
                except ValueError:
                    stamp = None
            sessions.append(
                (
                    stamp or "",
                    number,
                    Conversation(
                        id=f"{sample_id}/session_{number}",
                        messages=tuple(messages),
                        timestamp=stamp,
                        metadata={"sample_id": sample_id, "session": number, "date_time": raw_date},
                    ),
                )
            )
        # Date order within each sample; sessions without a date keep their number order.
        for _, _, conversation in sorted(sessions, key=lambda s: (s[0], s[1])):
            conversations.append(conversation)
            lines.append(line)
    # Do not reorder across samples by timestamp: each sample is a different pair of people.
    return _finish(conversations, path, lines, sort_by_time=False)


# MSC's two people, by their place in each session: the one who opens it is "Speaker 1" (persona 0 of
# the episode), the one who replies "Speaker 2" (persona 1), as ParlAI's MSC teacher aligns them. The
# files name them "Speaker 1"/"Speaker 2" (session 3), "bot_0"/"bot_1" (session 4), a worker number,
# or nothing (previous sessions); the place is what they share. paramem's user is Speaker 1, the
# assistant, whose replies a memory learns to give, Speaker 2.
MSC_SPEAKERS = (("user", "Speaker 1"), ("assistant", "Speaker 2"))


def _msc_dialog(turns: Any, where: str, path: Path, line: int) -> list[Message]:
    _require(isinstance(turns, list), f"{where}'dialog' must be a list", path, line)
    messages = []
    for place, turn in enumerate(turns):
        _require(
            isinstance(turn, dict) and isinstance(turn.get("text"), str),
            f"{where}each turn needs a 'text'",
            path,
            line,
        )
        role, name = MSC_SPEAKERS[place % 2]
        messages.append(Message(role=role, content=turn["text"], name=name))
    return messages


def msc_episode_id(episode: dict) -> str | None:
    """The id shared by an episode's lines across the MSC files (session 3 nests it in 'metadata')."""
    found = (episode.get("metadata") or {}).get("initial_data_id") or episode.get("initial_data_id")
    return str(found) if found is not None else None


def load_msc(path: Path) -> list[Conversation]:
    """MSC's `msc_dialogue` files (previous sessions, then the current one) and its `msc_personasummary`
    files (the current session only). Sessions are numbered so the current one is N when the file lies
    in a `session_N` folder, as in the release; from 1 otherwise."""
    conversations, lines = [], []
    folder_session = path.parent.name.removeprefix("session_")
    current = int(folder_session) if folder_session.isdigit() else None
    for line, episode in _json_lines(path):
        _require(isinstance(episode, dict) and "dialog" in episode, "missing 'dialog'", path, line)
        episode_id = msc_episode_id(episode) or f"episode_{line}"
        sessions = [
            previous.get("dialog") if isinstance(previous, dict) else None
            for previous in episode.get("previous_dialogs") or []
        ]
        sessions.append(episode["dialog"])
        first = (current or len(sessions)) - len(sessions) + 1
        for number, turns in enumerate(sessions, start=max(first, 1)):
            messages = _msc_dialog(turns, f"session {number}: ", path, line)
            if messages:
                conversations.append(
                    Conversation(
                        id=f"{episode_id}/session_{number}",
                        messages=tuple(messages),
                        metadata={"episode": episode_id, "session": number},
                    )
                )
                lines.append(line)
    return _finish(conversations, path, lines)


def _malp_text(value: Any) -> str:
    # MaLP wraps many turns in quotes and prefixes them with "Doctor:" / "Patient:", in either order.
    text = value.strip().strip('"').strip() if isinstance(value, str) else ""
    for prefix in ("Doctor:", "Patient:"):
        if text.startswith(prefix):
            text = text[len(prefix) :].strip()
    return text.strip('"').strip()


def load_malp(path: Path) -> list[Conversation]:
    dialogues = _json_list(path, _read_text(path), "a MaLP file")
    conversations, lines = [], []
    for index, (line, rounds) in enumerate(dialogues):
        where = f"dialogue {index}: "
        _require(isinstance(rounds, list), f"{where}must be a list of rounds", path, line)
        messages = []
        for round_ in rounds:
            _require(isinstance(round_, dict), f"{where}each round must be an object", path, line)
            for turn in round_.values():
                _require(isinstance(turn, dict), f"{where}each round holds {{'User', 'Assistant'}}", path, line)
                for key, role in (("User", "user"), ("Assistant", "assistant")):
                    text = _malp_text(turn.get(key))
                    if text and "end of simulation" not in text.lower():  # noisy turns are skipped
                        messages.append(Message(role=role, content=text))
        if messages:
            conversations.append(Conversation(id=f"malp_{index}", messages=tuple(messages)))
            lines.append(line)
    return _finish(conversations, path, lines)


LOADERS = {
    "jsonl": load_jsonl,
    "sharegpt": load_sharegpt,
    "chatgpt": load_chatgpt,
    "locomo": load_locomo,
    "msc": load_msc,
    "malp": load_malp,
}


def _head(path: Path, size: int = 1 << 20) -> str:
    """The start of a file, as text (a character cut at the end is dropped)."""
    _check_file(path)
    with open(path, "rb") as file:
        return file.read(size).decode("utf-8", errors="ignore")


def detect_format(path: Path) -> str:
    """Guess the format from the file's first megabyte; `--format` overrides it."""
    head = _head(path).lstrip()
    if not head:
        raise InputError("file is empty", path=path, line=1)
    first_line = head.split("\n", 1)[0]
    try:
        record = json.loads(first_line)
    except json.JSONDecodeError:
        record = None
    if isinstance(record, dict):
        if "messages" in record:
            return "jsonl"
        if "conversations" in record:
            return "sharegpt"
        if "dialog" in record:
            return "msc"
    if head.startswith("["):
        # Whole-document formats: look for keys only they have.
        for marker, name in (
            ('"mapping"', "chatgpt"),
            ('"conversations"', "sharegpt"),
            ('"speaker_a"', "locomo"),
            ('"Assistant"', "malp"),
        ):
            if marker in head:
                return name
    raise InputError("unknown conversation format (use --format: " + ", ".join(FORMATS) + ")", path=path, line=1)


def load_conversations(path: str | Path, format: str | None = None) -> list[Conversation]:
    """Load and validate a conversation file; raises `InputError` (file, line, reason) on bad input."""
    path = Path(path)
    name = format or detect_format(path)
    if name not in LOADERS:
        raise InputError(f"unknown format {name!r} (one of {', '.join(FORMATS)})", path=path)
    return LOADERS[name](path)
