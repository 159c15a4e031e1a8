"""The yes/no probe file of DESIGN.md: {"conversation": "c1", "question": "...", "answer": "yes"} a line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from paramem.data.conversations import json_lines
from paramem.errors import InputError


@dataclass(frozen=True)
class Probe:
    conversation: str  # the conversation it is about (for "no" probes: the one it is a near miss of)
    question: str
    answer: str  # "yes" or "no"


def load_probes(path: str | Path, known_conversations: set[str] | None = None) -> list[Probe]:
    """Load and validate probes; with `known_conversations`, every probe must name one of them."""
    path = Path(path)
    probes = []
    for line, record in json_lines(path):
        if not isinstance(record, dict):
            raise InputError("each line must be a JSON object", path, line)
        for key in ("conversation", "question", "answer"):
            if not isinstance(record.get(key), str) or not record[key].strip():
                raise InputError(f"missing or empty {key!r}", path, line)
        answer = record["answer"].strip().lower()
        if answer not in ("yes", "no"):
            raise InputError(f"'answer' must be yes or no, not {record['answer']!r}", path, line)
        if known_conversations is not None and record["conversation"] not in known_conversations:
            raise InputError(f"unknown conversation {record['conversation']!r} (not in this user's memory)", path, line)
        probes.append(Probe(record["conversation"], record["question"].strip(), answer))
    if not probes:
        raise InputError("no probes in file", path=path)
    return probes
