"""Remember many users at once: one Ray task per user, every task writing to one shared store.

Ray runs locally by default (no set-up); `address` points it at a cluster (`ray start --head` on one
machine, `ray start --address=HEAD:6379` on the others), whose nodes must see the same store path.
Each user is independent: a bad file fails that user's task only, and the others finish.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from paramem.augment.teachers import make_teacher
from paramem.config import RememberConfig
from paramem.data.formats import load_conversations
from paramem.errors import InputError
from paramem.lifecycle.remember import remember

CONVERSATION_SUFFIXES = (".jsonl", ".json")


@dataclass(frozen=True)
class UserJob:
    user: str
    file: Path  # the user's conversation file
    format: str | None = None  # None: detected from the file


@dataclass(frozen=True)
class TeacherSpec:
    """How each task builds its own teacher (teachers hold clients and models; they do not travel)."""

    kind: str = "extractive"
    model: str | None = None
    url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"  # read on the node that runs the task


@dataclass
class UserOutcome:
    user: str
    ok: bool
    learned: int = 0  # conversations learned by this run
    skipped: int = 0  # conversations already in memory
    seconds: float = 0.0
    error: str | None = None  # one line, for a failed user


def read_jobs(source: Path) -> list[UserJob]:
    """A folder: each conversation file in it is one user, named after the file (alice.jsonl -> alice).
    A manifest (.jsonl): one `{"user": ..., "file": ..., "format": ...}` a line, paths relative to it."""
    source = Path(source)
    if source.is_dir():
        jobs = [
            UserJob(path.stem, path.resolve())
            for path in sorted(source.iterdir())
            if path.is_file() and path.suffix in CONVERSATION_SUFFIXES
        ]
        if not jobs:
            raise InputError(f"no conversation files ({', '.join(CONVERSATION_SUFFIXES)}) in this folder", path=source)
        return jobs
    if not source.is_file():
        raise InputError("no such folder or manifest", path=source)
    jobs, seen = [], set()
    for number, line in enumerate(source.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(f"invalid JSON: {error.msg}", path=source, line=number) from None
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("user"), str)
            or not isinstance(entry.get("file"), str)
        ):
            raise InputError('expected {"user": "...", "file": "..."}', path=source, line=number)
        if entry["user"] in seen:
            raise InputError(f"user {entry['user']!r} appears twice", path=source, line=number)
        seen.add(entry["user"])
        jobs.append(UserJob(entry["user"], (source.parent / entry["file"]).resolve(), entry.get("format")))
    if not jobs:
        raise InputError("the manifest names no users", path=source)
    return jobs


def learn_user(job: UserJob, teacher: TeacherSpec, config: RememberConfig, home: Path, threads: int) -> UserOutcome:
    """Everything for one user, in whatever process runs it; bad input becomes a failed outcome."""

    torch.set_num_threads(threads)
    start = time.perf_counter()
    try:
        conversations = load_conversations(job.file, job.format)
        learned = remember(
            job.user,
            conversations,
            make_teacher(teacher.kind, teacher.model, teacher.url, teacher.api_key_env),
            config,
            home,
        )
    except (InputError, ValueError) as error:
        return UserOutcome(job.user, False, seconds=time.perf_counter() - start, error=str(error).splitlines()[0])
    return UserOutcome(job.user, True, len(learned), len(conversations) - len(learned), time.perf_counter() - start)


def _worker_environment() -> dict[str, str]:
    """paramem's settings travel to the workers (a cluster's workers do not share the driver's shell)."""
    names = ("PARAMEM_CACHE", "PARAMEM_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    return {name: os.environ[name] for name in names if name in os.environ}


def remember_many(
    jobs: list[UserJob],
    teacher: TeacherSpec,
    config: RememberConfig,
    home: Path,
    address: str | None = None,
    cpus_per_user: int = 1,
    on_done: Callable[[UserOutcome], None] | None = None,
) -> list[UserOutcome]:
    """Train one user per Ray task; returns every user's outcome, in the order the jobs were given."""
    import ray

    home = Path(home).resolve()  # every worker must write to the same store
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(
            address=address,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": _worker_environment()},
        )
    try:
        task = ray.remote(num_cpus=cpus_per_user, max_retries=0)(learn_user)
        pending = {task.remote(job, teacher, config, home, cpus_per_user): job for job in jobs}
        outcomes: dict[str, UserOutcome] = {}
        while pending:
            [ready], _ = ray.wait(list(pending), num_returns=1)
            job = pending.pop(ready)
            try:
                outcome = ray.get(ready)
            except ray.exceptions.RayError as error:  # a crashed worker fails its user, not the run
                outcome = UserOutcome(job.user, False, error=str(error).strip().splitlines()[-1])
            outcomes[job.user] = outcome
            if on_done:
                on_done(outcome)
        return [outcomes[job.user] for job in jobs]
    finally:
        if started_here:
            ray.shutdown()
