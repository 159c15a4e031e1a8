"""The conversation file formats paramem reads, one loader each, and which one a file is.

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

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from paramem.data.conversations import (
    ROLES,
    Conversation,
    Message,
    check_file,
    check_timestamp,
    finish,
    json_lines,
    json_list,
    read_text,
    require,
    string_field,
)
from paramem.errors import InputError

FORMATS = ("jsonl", "sharegpt", "chatgpt", "locomo", "msc", "malp")


def load_jsonl(path: Path) -> list[Conversation]:
    conversations, lines = [], []
    for line, record in json_lines(path):
        require(isinstance(record, dict), "each line must be a JSON object", path, line)
        require("id" in record, "missing 'id'", path, line)
        require(
            isinstance(record["id"], (str, int))
            and not isinstance(record["id"], bool)
            and str(record["id"]).strip() != "",
            "'id' must be a non-empty string",
            path,
            line,
        )
        raw = record.get("messages")
        require(isinstance(raw, list), "missing 'messages' list", path, line)
        require(bool(raw), f"conversation {record['id']!r} is empty", path, line)
        messages = []
        for index, message in enumerate(raw):
            require(isinstance(message, dict), f"message {index} must be an object", path, line)
            require("role" in message, f"message {index}: missing 'role'", path, line)
            require("content" in message, f"message {index}: missing 'content'", path, line)
            role = message["role"]
            require(role in ROLES, f"message {index}: role must be one of {', '.join(ROLES)}", path, line)
            content = string_field(message["content"], f"message {index}: 'content'", path, line)
            messages.append(Message(role=role, content=content))
        conversations.append(
            Conversation(
                id=str(record["id"]),
                messages=tuple(messages),
                timestamp=check_timestamp(record.get("timestamp"), path, line),
            )
        )
        lines.append(line)
    return finish(conversations, path, lines)


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
        records = json_list(path, read_text(path), "a ShareGPT document")
    else:
        records = list(json_lines(path))
    conversations, lines = [], []
    for index, (line, record) in enumerate(records):
        where = f"item {index}: "
        require(
            isinstance(record, dict) and isinstance(record.get("conversations"), list),
            f"{where}missing 'conversations' list",
            path,
            line,
        )
        messages = []
        for turn in record["conversations"]:
            require(
                isinstance(turn, dict) and "from" in turn and "value" in turn,
                f"{where}each turn needs 'from' and 'value'",
                path,
                line,
            )
            role = SHAREGPT_ROLES.get(str(turn["from"]).lower())
            require(role is not None, f"{where}unknown speaker {turn['from']!r}", path, line)
            messages.append(Message(role=role, content=string_field(turn["value"], f"{where}'value'", path, line)))
        require(bool(messages), f"{where}conversation is empty", path, line)
        conversation_id = str(record.get("id", index))
        conversations.append(Conversation(id=conversation_id, messages=tuple(messages)))
        lines.append(line)
    return finish(conversations, path, lines)


def _chatgpt_messages(mapping: dict, current: str | None, where: str, path: Path, line: int) -> list[Message]:
    """Walk the export's tree from the current node up to the root: the branch the user last saw."""
    if current is None:  # older exports: take the last leaf
        leaves = [key for key, node in mapping.items() if not node.get("children")]
        current = leaves[-1] if leaves else None
    chain, seen = [], set()
    while current is not None:
        require(current in mapping and current not in seen, f"{where}broken 'mapping' tree", path, line)
        seen.add(current)
        node = mapping[current]
        require(isinstance(node, dict), f"{where}broken 'mapping' tree", path, line)
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
    items = json_list(path, read_text(path), "a ChatGPT export")
    conversations, lines = [], []
    for index, (line, item) in enumerate(items):
        where = f"conversation {index}: "
        require(
            isinstance(item, dict) and isinstance(item.get("mapping"), dict), f"{where}missing 'mapping'", path, line
        )
        messages = _chatgpt_messages(item["mapping"], item.get("current_node"), where, path, line)
        require(bool(messages), f"{where}conversation is empty", path, line)
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
    return finish(conversations, path, lines)


LOCOMO_DATE_FORMAT = "%I:%M %p on %d %B, %Y"  # "1:56 pm on 8 May, 2023"


def load_locomo(path: Path) -> list[Conversation]:
    samples = json_list(path, read_text(path), "a LoCoMo file")
    conversations, lines = [], []
    for index, (line, sample) in enumerate(samples):
        where = f"sample {index}: "
        require(
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
            require(isinstance(turns, list), f"{where}{key} must be a list", path, line)
            messages = []
            for turn in turns:
                require(
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
    return finish(conversations, path, lines, sort_by_time=False)


# MSC's two people, by their place in each session: the one who opens it is "Speaker 1" (persona 0 of
# the episode), the one who replies "Speaker 2" (persona 1), as ParlAI's MSC teacher aligns them. The
# files name them "Speaker 1"/"Speaker 2" (session 3), "bot_0"/"bot_1" (session 4), a worker number,
# or nothing (previous sessions); the place is what they share. paramem's user is Speaker 1, the
# assistant, whose replies a memory learns to give, Speaker 2.
MSC_SPEAKERS = (("user", "Speaker 1"), ("assistant", "Speaker 2"))


def _msc_dialog(turns: Any, where: str, path: Path, line: int) -> list[Message]:
    require(isinstance(turns, list), f"{where}'dialog' must be a list", path, line)
    messages = []
    for place, turn in enumerate(turns):
        require(
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
    for line, episode in json_lines(path):
        require(isinstance(episode, dict) and "dialog" in episode, "missing 'dialog'", path, line)
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
    return finish(conversations, path, lines)


def _malp_text(value: Any) -> str:
    # MaLP wraps many turns in quotes and prefixes them with "Doctor:" / "Patient:", in either order.
    text = value.strip().strip('"').strip() if isinstance(value, str) else ""
    for prefix in ("Doctor:", "Patient:"):
        if text.startswith(prefix):
            text = text[len(prefix) :].strip()
    return text.strip('"').strip()


def load_malp(path: Path) -> list[Conversation]:
    dialogues = json_list(path, read_text(path), "a MaLP file")
    conversations, lines = [], []
    for index, (line, rounds) in enumerate(dialogues):
        where = f"dialogue {index}: "
        require(isinstance(rounds, list), f"{where}must be a list of rounds", path, line)
        messages = []
        for round_ in rounds:
            require(isinstance(round_, dict), f"{where}each round must be an object", path, line)
            for turn in round_.values():
                require(isinstance(turn, dict), f"{where}each round holds {{'User', 'Assistant'}}", path, line)
                for key, role in (("User", "user"), ("Assistant", "assistant")):
                    text = _malp_text(turn.get(key))
                    if text and "end of simulation" not in text.lower():  # noisy turns are skipped
                        messages.append(Message(role=role, content=text))
        if messages:
            conversations.append(Conversation(id=f"malp_{index}", messages=tuple(messages)))
            lines.append(line)
    return finish(conversations, path, lines)


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
    check_file(path)
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
