"""Personalised reply generation's data: one person's history, and the turns a memory of it should help
to reply (MiLP's next-response task on the datasets that are here; the paper's AmazonQA, Reddit and
MedicalDialogue are not).

- MSC: the memory learns sessions 1-3 of an episode (`msc_dialogue/session_3`), and replies as Speaker
  2 in session 4 (`msc_personasummary/session_4`, matched on `initial_data_id`). Speakers are told apart
  by their place in each session (conversations.MSC_SPEAKERS): Speaker 1, who opens, is paramem's
  user; Speaker 2, who replies, is the assistant whose turns are generated. Persona-F1 is measured
  against Speaker 2's persona (the episode's `personas[1]`, what sessions 1-3 said about them: the
  "your persona" of ParlAI's MSC models) and, as a second figure, against Speaker 1's.
- MaLP medical dialogues: the memory learns a dialogue without its last exchange, and gives the
  doctor's last reply. Persona-F1 is measured against the patient's earlier turns (the doctor has no
  persona; what is personal in a consultation is the patient's).

Episodes are split once, by position in the file: the first `DEV_EPISODES` are development (the
search and any other tuning use them), the rest are for reporting, never looked at while tuning.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from paramem.data.conversations import Conversation
from paramem.data.formats import load_malp, load_msc, msc_episode_id
from paramem.errors import InputError

DEV_EPISODES = 10  # of each dataset: the first 10 are for tuning, the rest for reporting


@dataclass(frozen=True)
class Episode:
    id: str
    history: tuple[Conversation, ...]  # what a memory learns
    test: Conversation  # the conversation whose assistant turns are generated
    targets: tuple[int, ...]  # places in test.messages of the assistant turns scored
    facts: tuple[str, ...]  # what Persona-F1 measures against (module docstring)
    partner_facts: tuple[str, ...] = ()  # the other person's facts, where the data has them
    split: str = "report"  # "dev" or "report"


def _split(index: int, dev: int) -> str:
    return "dev" if index < dev else "report"


def msc_episodes(
    session_3: Path, session_4: Path, max_targets: int | None = None, dev: int = DEV_EPISODES
) -> list[Episode]:
    """MSC episodes in file order: sessions 1-3 from `session_3`, session 4 from `session_4`."""
    histories: dict[str, list[Conversation]] = {}
    for conversation in load_msc(session_3):
        histories.setdefault(conversation.metadata["episode"], []).append(conversation)
    personas: dict[str, list] = {}
    for line_number, line in enumerate(session_3.read_text(encoding="utf-8").split("\n"), start=1):
        if line.strip():
            record = json.loads(line)
            found = record.get("personas")
            ok = isinstance(found, list) and len(found) == 2 and all(isinstance(p, list) for p in found)
            if not ok:
                raise InputError("'personas' must hold two lists of facts", path=session_3, line=line_number)
            personas[msc_episode_id(record)] = found
    episodes = []
    for index, test in enumerate(load_msc(session_4)):
        episode_id = test.metadata["episode"]
        if episode_id not in histories:
            raise InputError(f"episode {episode_id!r} has no sessions 1-3 in {session_3}", path=session_4)
        targets = tuple(i for i, m in enumerate(test.messages) if m.role == "assistant" and i > 0)
        episodes.append(
            Episode(
                id=episode_id,
                history=tuple(histories[episode_id]),
                test=test,
                targets=targets[:max_targets] if max_targets else targets,
                facts=tuple(personas[episode_id][1]),
                partner_facts=tuple(personas[episode_id][0]),
                split=_split(index, dev),
            )
        )
    return episodes


def malp_episodes(path: Path, dev: int = DEV_EPISODES) -> list[Episode]:
    """MaLP dialogues ending in a doctor's reply to the patient: all but that last exchange is history."""
    episodes = []
    for index, dialogue in enumerate(load_malp(path)):
        messages = dialogue.messages
        last = max((i for i, m in enumerate(messages) if m.role == "assistant"), default=-1)
        # the last exchange is the patient's last message and the reply to it; something must precede it
        if last < 3 or messages[last - 1].role != "user":
            continue
        history = Conversation(id=dialogue.id, messages=messages[: last - 1])
        test = Conversation(id=dialogue.id, messages=messages[: last + 1])
        facts = tuple(m.content for m in history.messages if m.role == "user")
        episodes.append(Episode(dialogue.id, (history,), test, (last,), facts, split=_split(index, dev)))
    return episodes


def select(episodes: list[Episode], split: str, count: int | None) -> list[Episode]:
    """The first `count` episodes of a split."""
    chosen = [e for e in episodes if e.split == split]
    return chosen[:count] if count else chosen
