"""Learning and forgetting as jobs: a bounded queue, a pool of `job_workers`, one job at a time per user.

Each job runs in a child process (`python -m paramem.serve.jobs`) with its own copy of the base
model: the model serving is never trained, and a crash or out-of-memory while learning ends that job,
not the server. A job's record is `users/<user>/jobs/<job>.json`; an upload waits beside it as
`<job>.jsonl` until the job ends, learned or failed, and is then deleted. A user's jobs run in the
order they came, never two at once; at most `max_jobs` wait or run, all users together, and each user
keeps the records of their last `job_history` ended jobs.

Kill the server at any point and nothing is lost: what a job committed stays (learning commits
conversation by conversation, forgetting commits once, atomically), and at the next start `resume()`
queues again every job that had not ended, skipping what was committed. A child still running from a
killed server is waited for, not run twice. While a forget is queued or running, the user's memory is
not answered from (`forgetting`): it still holds the conversation being taken out.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from dataclasses import asdict
from pathlib import Path

from paramem.augment.teachers import make_teacher
from paramem.config import Form, KeepText, RememberConfig
from paramem.data.formats import load_conversations
from paramem.errors import InputError
from paramem.files import write_atomic
from paramem.lifecycle.forget import forget, stored_train_config
from paramem.lifecycle.remember import Callbacks, remember
from paramem.read.loading import load_memory
from paramem.read.recall import recollections
from paramem.serve.config import ServeConfig
from paramem.serve.errors import ApiError, public_reason
from paramem.store.user import UserLocked, UserMemory, users

log = logging.getLogger("paramem.serve")
LOCKED_EXIT = 75  # the child's exit code when another process holds the user's lock: try again later
ENDED = ("done", "failed")


class Jobs:
    def __init__(self, config: ServeConfig, workers: bool = True):
        """`workers=False`: a job's child process, which runs its own job and queues none."""
        self.config = config
        self.queue: deque[tuple[str, str]] = deque()  # (user, job) waiting, oldest first
        self.busy: set[str] = set()  # users with a job running
        self.children: dict[str, subprocess.Popen] = {}
        self.changed = threading.Condition()
        self.stopping = False
        self.workers = [
            threading.Thread(target=self._work, name=f"paramem-jobs-{i}", daemon=True)
            for i in range(config.job_workers)
        ]
        for worker in self.workers if workers else ():
            worker.start()

    # -- records -----------------------------------------------------------------------------

    def _folder(self, user: str) -> Path:
        return UserMemory(user, self.config.home).root / "jobs"

    def _read(self, user: str, job: str) -> dict | None:
        path = self._folder(user) / f"{job}.json"
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def _save(self, user: str, job: str, **fields) -> dict:
        with self.changed:
            record = {**(self._read(user, job) or {}), **fields, "job": job, "user": user}
            write_atomic(self._folder(user) / f"{job}.json", json.dumps(record))
        return record

    def _records(self, user: str) -> list[dict]:
        """Every job record of `user` that can be read, by job id."""
        folder = self._folder(user)
        paths = sorted(folder.glob("*.json")) if folder.is_dir() else []
        return [record for path in paths if (record := self._read(user, path.stem))]

    def status(self, user: str, job: str) -> dict:
        """A job's record as its user may read it (no process id, no file path)."""
        record = self._read(user, job) if len(job) <= 64 and job.isalnum() else None
        if record is None:
            raise ApiError(404, f"no job {job!r}", "not_found_error")
        return {k: v for k, v in record.items() if k not in ("pid", "log")}

    def forgetting(self, user: str) -> str | None:
        """The id of a forget of `user` queued or running, if there is one."""
        return self.pending(user, "forget")

    def pending(self, user: str, kind: str | None = None) -> str | None:
        """The id of a job of `user` (of `kind`, if given) queued or running, if there is one."""
        pending = (r for r in self._records(user) if kind in (None, r.get("kind")) and r.get("state") not in ENDED)
        return next((r["job"] for r in pending), None)

    # -- submitting --------------------------------------------------------------------------

    def submit_upload(self, user: str, data: bytes) -> dict:
        """Check an upload, keep it and queue its learning; bad input is a 400 and stores nothing."""

        if len(data) > self.config.max_upload_bytes:
            raise ApiError(413, f"the upload is over the limit of {self.config.max_upload_bytes} bytes")
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ApiError(400, f"the upload is not UTF-8 text (byte {error.start} cannot be read)") from None
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "upload.jsonl"
            path.write_bytes(data)
            try:
                conversations = load_conversations(path)
            except InputError as error:
                raise ApiError(400, str(error).replace(str(path), "upload")) from None
        if not conversations:
            raise ApiError(400, "the upload holds no conversation")
        return self._queue(user, "learn", data=data, index=conversations, total=len(conversations), message="")

    def submit_forget(self, user: str, conversation: str) -> dict:
        """Queue forgetting one learned conversation (the same forget queued already: that job)."""
        memory = UserMemory(user, self.config.home)
        milp = memory.milp.record() or {}
        stored = {r.id for r in memory.learned()} | memory.texts.ids() | set(milp.get("conversations", []))
        if conversation not in stored:
            raise ApiError(404, f"no stored conversation {conversation!r}", "not_found_error")
        pending = self.forgetting(user)
        if pending is not None and self._read(user, pending).get("conversation") == conversation:
            return self.status(user, pending)
        return self._queue(user, "forget", conversation=conversation, total=1, message="")

    def _queue(self, user: str, kind: str, data: bytes | None = None, index: list | None = None, **fields) -> dict:
        """Queue a job; `index`: an upload's conversations, indexed once the job is accepted (answerable
        from their text at once), before any worker can take the job."""
        with self.changed:
            if self.stopping:
                raise ApiError(503, "the server is shutting down", "server_error")
            if len(self.queue) + len(self.busy) >= self.config.max_jobs:
                raise ApiError(429, "too many jobs are waiting; try again later", "rate_limit_error", retry_after=30)
            if index and self.config.keep_text != KeepText.NEVER:
                try:
                    UserMemory(user, self.config.home).texts.add(index)
                except InputError as error:
                    raise ApiError(400, str(error)) from None
            job = uuid.uuid4().hex[:12]
            folder = self._folder(user)
            folder.mkdir(parents=True, exist_ok=True)
            if data is not None:
                (folder / f"{job}.jsonl").write_bytes(data)
            self._save(user, job, kind=kind, state="queued", done=0, created=time.time(), **fields)
            self.queue.append((user, job))
            self.changed.notify_all()
        return self.status(user, job)

    def resume(self) -> list[str]:
        """Queue again every job a stopped server left unended, oldest first; returns their ids."""
        found = []
        for user in users(self.config.home):
            for record in self._records(user):
                if record.get("state") not in ENDED and (user, record["job"]) not in self.queue:
                    found.append((record.get("created", 0), user, record["job"]))
        with self.changed:
            for _, user, job in sorted(found):
                self.queue.append((user, job))
            self.changed.notify_all()
        return [job for _, _, job in sorted(found)]

    # -- running -----------------------------------------------------------------------------

    def _next(self) -> tuple[str, str] | None:
        """The oldest waiting job whose user has none running (under the lock)."""
        for entry in self.queue:
            if entry[0] not in self.busy:
                self.queue.remove(entry)
                self.busy.add(entry[0])
                return entry
        return None

    def _work(self) -> None:
        while True:
            with self.changed:
                while not self.stopping and (entry := self._next()) is None:
                    self.changed.wait()
                if self.stopping:
                    return
            user, job = entry
            try:
                self._run(user, job)
            except Exception:
                log.exception("job %s of %s failed in the server", job, user)
                self._end(user, job, state="failed", message="the job failed in the server; its log says why")
            finally:
                with self.changed:
                    self.busy.discard(user)
                    self.changed.notify_all()

    def _run(self, user: str, job: str) -> None:
        record = self._read(user, job)
        if record is None or record.get("state") in ENDED:
            return
        while _is_our_child(record.get("pid"), job) and not self.stopping:  # left by a killed server
            time.sleep(0.5)
        record = self._read(user, job)
        if record is None or record.get("state") in ENDED or self.stopping:
            return
        log_path = self._folder(user) / f"{job}.log"
        settings = {**asdict(self.config), "home": None if self.config.home is None else str(self.config.home)}
        with open(log_path, "wb") as stderr:
            child = subprocess.Popen(
                [sys.executable, "-m", "paramem.serve.jobs", json.dumps(settings), user, job],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,  # a Ctrl-C at the server's terminal is not the job's
            )
        self.children[job] = child
        self._save(user, job, state="running", pid=child.pid)
        code = child.wait()
        self.children.pop(job, None)
        if (self._read(user, job) or {}).get("state") in ENDED:
            return
        if self.stopping:  # the server stops: the job waits for the next start (resume)
            self._save(user, job, state="queued", pid=None)
        elif code == LOCKED_EXIT:  # another process (a CLI run) holds the user: queue it again
            self._save(user, job, state="queued", pid=None, message="waiting for the user's other work to end")
            time.sleep(2)
            with self.changed:
                self.queue.appendleft((user, job))
        else:
            last = (
                log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-3:]
                if log_path.exists()
                else []
            )
            log.warning("job %s of %s: the process stopped (exit %s): %s", job, user, code, " | ".join(last))
            what = "learning" if record.get("kind", "learn") == "learn" else "forgetting"
            self._end(
                user,
                job,
                state="failed",
                message=f"the {what} process stopped (exit {code}); the server's log says why",
            )

    def _end(self, user: str, job: str, **fields) -> None:
        """Delete the job's upload and log, record how it ended, and drop the oldest ended records. In
        that order, a job seen ended has left no text behind."""
        for suffix in (".jsonl", ".log"):
            (self._folder(user) / f"{job}{suffix}").unlink(missing_ok=True)
        self._save(user, job, ended=time.time(), pid=None, **fields)
        ended = sorted((r.get("ended", 0), r["job"]) for r in self._records(user) if r.get("state") in ENDED)
        for _, old in ended[: max(0, len(ended) - self.config.job_history)]:
            (self._folder(user) / f"{old}.json").unlink(missing_ok=True)

    def stop(self) -> None:
        """Stop the workers and the running children; unended jobs resume at the next start."""
        with self.changed:
            self.stopping = True
            self.changed.notify_all()
        for child in list(self.children.values()):
            child.send_signal(signal.SIGTERM)

    # -- the child's work --------------------------------------------------------------------

    def run_in_child(self, user: str, job: str) -> None:
        """What `python -m paramem.serve.jobs` does: the job's learning or forgetting, its progress
        recorded as it goes, its end recorded by itself."""
        record = self._read(user, job) or {}
        try:
            if record.get("kind") == "forget":
                self._forget(user, job, record["conversation"])
            else:
                self._learn(user, job)
        except UserLocked:
            sys.exit(LOCKED_EXIT)
        except InputError as error:
            self._end(user, job, state="failed", message=public_reason(error))

    def _learn(self, user: str, job: str) -> None:
        memory = UserMemory(user, self.config.home)
        upload = self._folder(user) / f"{job}.jsonl"
        if not upload.exists():  # stopped between deleting it and recording the end: nothing left to learn
            self._end(user, job, state="failed", message="the upload is gone; what was learned of it is kept")
            return
        conversations = load_conversations(upload)
        config = RememberConfig(
            base_model=self.config.base_model,
            dtype=self.config.dtype,
            train=stored_train_config(memory.settings()),
            keep_text=self.config.keep_text,
        )
        known = len(memory.learned())
        callbacks = Callbacks(on_learned=lambda _: self._save(user, job, done=len(memory.learned()) - known))
        learned = remember(user, conversations, make_teacher(self.config.teacher), config, self.config.home, callbacks)
        self._recall_ahead(user)
        self._end(user, job, state="done", done=len(learned), message=f"learned {len(learned)} conversations")

    def _forget(self, user: str, job: str, conversation: str) -> None:
        memory = UserMemory(user, self.config.home)
        stored = {r.id for r in memory.learned()} | memory.texts.ids()
        if conversation in {i for i, _ in memory.forgotten()} and conversation not in stored:
            # committed by an earlier run of this job that stopped before recording its end
            self._end(user, job, state="done", done=1, message=f"forgot {conversation}")
            return
        progress = lambda done, total, _: self._save(user, job, done=done - 1, total=total)  # noqa: E731
        result = forget(user, conversation, self.config.home, progress)
        self._recall_ahead(user)
        self._end(user, job, state="done", done=1, total=1, message=f"forgot {conversation}", result=asdict(result))

    def _recall_ahead(self, user: str) -> None:
        """Compute what the new version recalls of each conversation, here in the background, so that
        the server reads it from beside the version instead of generating it while users wait."""

        memory = UserMemory(user, self.config.home)
        if not memory.learned() or memory.form == Form.CARTRIDGE:
            return
        try:
            model, tokenizer, loaded = load_memory(user, self.config.home, self.config.dtype)
            recollections(model, tokenizer, loaded)
        except (InputError, OSError) as error:  # a cache only: the server computes it when asked
            print(f"recollections not computed ahead: {error}", file=sys.stderr)


def _is_our_child(pid: int | None, job: str) -> bool:
    """Whether `pid` is still this job's process (a pid reused by another program is not)."""
    if not pid:
        return False
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        try:
            os.kill(pid, 0)  # no /proc (macOS): whether it runs at all
        except (ProcessLookupError, PermissionError):
            return False
        return True
    return b"paramem.serve.jobs" in command and job.encode() in command


if __name__ == "__main__":
    settings, user, job = sys.argv[1:]
    config = ServeConfig(**json.loads(settings))
    os.nice(config.job_niceness)  # learning is background work: the server's replies come first
    Jobs(config, workers=False).run_in_child(user, job)
