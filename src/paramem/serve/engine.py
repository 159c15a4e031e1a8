"""The generation engine: one thread owns the model, takes replies from a queue and decodes them in
batches, several users' memories in one forward pass.

Why one thread: peft's adapters live in the one base model, and loading or deleting one changes the
model under any generation running. Here only the engine's thread loads, evicts and generates, and it
loads a batch's memories before the batch starts, so a reply reads the same adapter from its first
token to its last, and eviction never touches an adapter in use.

Why batches: on a CPU a decoding step of eight rows costs little more than one (the weights are read
once either way). A batch mixes users through peft's `adapter_names` (each row its own adapter, or
`__base__`); a cartridge memory reads its own prefix cache, so it decodes alone. Rows are left-padded
with their common first token, which every row already holds, so the padding changes neither the
attention (it is masked) nor the repetition penalty's token set: a row decodes as it would alone
(benchmarks/serve_load.py checks it reply by reply).

Nothing here blocks the event loop: a request is put in the queue, and what it yields comes back
through `on_event`, which the app hands to the loop. A cancelled request (a client gone, the server
stopping) leaves its batch at the next decoding step.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from paramem.config import REPLY_REPETITION_PENALTY
from paramem.serve.errors import ApiError, Later
from paramem.serve.memories import Loaded, Memories, Memory

log = logging.getLogger("paramem.serve")


@dataclass
class Reply:
    """One request's reply: what it reads, and where its pieces go.

    `on_event` gets ("start",) once the reply's memory is loaded, then ("text", piece) as the reply
    grows, then ("end", usage) with the whole text, the token counts and the finish reason; or
    ("error", ApiError) instead of any of them."""

    memory: Memory | None  # None: the base model alone
    prompt: list[int]  # the chat as the model reads it
    max_tokens: int
    on_event: Callable[[tuple], None]
    cancelled: threading.Event = field(default_factory=threading.Event)
    ids: list[int] = field(default_factory=list)  # the reply's tokens so far, the end token not among them
    sent: str = ""  # the text given out so far
    finish: str | None = None  # "stop" or "length" once it ended

    def cancel(self) -> None:
        self.cancelled.set()


@dataclass
class _Call:
    """Exclusive work on the engine's thread (a recollection), given the memories; its result in `future`."""

    work: Callable[[Memories], object]
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)


class Engine:
    def __init__(self, memories: Memories, max_batch: int, max_waiting: int, window: float = 0.0):
        self.memories = memories
        self.window = window  # an idle engine waits this long after a first reply for others to join it
        self.tokenizer = memories.tokenizer
        self.max_batch, self.max_waiting = max_batch, max_waiting
        stops = memories.base.generation_config.eos_token_id or self.tokenizer.eos_token_id
        self.stops = set(stops if isinstance(stops, list) else [stops])  # Qwen ends a turn on two tokens
        self.waiting: deque[Reply | _Call] = deque()
        self.running: list[Reply] = []
        self.changed = threading.Condition()
        self.stopping = False
        self.batches = 0  # forward batches run, and the rows they held (the load benchmark reads them)
        self.rows = 0
        self.thread = threading.Thread(target=self._serve, name="paramem-engine", daemon=True)
        memories.owner = self.thread
        self.thread.start()

    # -- what the app calls (any thread) -----------------------------------------------------

    def submit(self, reply: Reply) -> None:
        with self.changed:
            if self.stopping:
                raise ApiError(503, "the server is shutting down", "server_error")
            if sum(isinstance(w, Reply) for w in self.waiting) >= self.max_waiting:
                raise ApiError(503, "too many replies are waiting; ask again shortly", "server_error", retry_after=2)
            self.waiting.append(reply)
            self.changed.notify()

    def call(self, work: Callable[[Memories], object]) -> concurrent.futures.Future:
        job = _Call(work)
        with self.changed:
            if self.stopping:
                raise ApiError(503, "the server is shutting down", "server_error")
            self.waiting.appendleft(job)  # a recollection is read from beside its version: short, so first
            self.changed.notify()
        return job.future

    def stop(self, seconds: float = 5.0) -> None:
        """Refuse what waits, cancel what runs (it ends within a decoding step) and let the thread end."""
        with self.changed:
            self.stopping = True
            waiting, self.waiting = list(self.waiting), deque()
            for reply in self.running:
                reply.cancel()
            self.changed.notify_all()
        for item in waiting:
            if isinstance(item, Reply):
                item.on_event(("error", ApiError(503, "the server is shutting down", "server_error")))
            else:
                item.future.set_exception(ApiError(503, "the server is shutting down", "server_error"))
        self.thread.join(seconds)

    # -- the engine's thread -----------------------------------------------------------------

    def _serve(self) -> None:
        while True:
            with self.changed:
                while not self.waiting and not self.stopping:
                    self.changed.wait()
                if self.window and self.max_batch > 1 and len(self.waiting) == 1:
                    deadline = time.monotonic() + self.window  # requests sent together arrive ms apart
                    while not self.stopping and len(self.waiting) < self.max_batch and time.monotonic() < deadline:
                        self.changed.wait(deadline - time.monotonic())
                if self.stopping:
                    return
                first = self.waiting.popleft()
            try:
                if isinstance(first, _Call):
                    self._run_call(first)
                else:
                    self._run_batch(first)
            except Exception:  # never let one request end the engine: log it, go on
                log.exception("the engine failed a batch")

    def _run_call(self, call: _Call) -> None:
        if not call.future.set_running_or_notify_cancel():
            return
        try:
            call.future.set_result(call.work(self.memories))
        except BaseException as error:
            call.future.set_exception(error)

    def _run_batch(self, first: Reply) -> None:
        batch = self._form_batch(first)
        if not batch:
            return
        with self.changed:
            self.running = [reply for reply, _ in batch]
        self.batches += 1
        self.rows += len(batch)
        try:
            for reply, _ in batch:
                reply.on_event(("start",))
            self._generate(batch)
        except Exception as error:
            log.exception("a generation failed")
            for reply, _ in batch:
                if reply.finish is None:
                    reply.finish = "error"
                    reply.on_event(
                        ("error", ApiError(500, f"the generation failed ({type(error).__name__})", "server_error"))
                    )
        finally:
            with self.changed:
                self.running = []

    def _form_batch(self, first: Reply) -> list[tuple[Reply, Loaded]]:
        """`first` and the waiting replies that can decode with it, their memories loaded and pinned: a
        cartridge memory decodes alone; the batch holds at most `max_batch` rows and `cache_size` memories."""
        batch: list[tuple[Reply, Loaded]] = []
        pinned: set[str] = set()
        later: list[Reply] = []  # back to the queue's front, in their order
        candidates, looked = [first], False
        while candidates:
            reply = candidates.pop(0)
            if reply.cancelled.is_set():
                continue
            if batch and reply.memory is not None and not self._may_join(reply.memory, batch, pinned):
                later.append(reply)  # left unloaded: loading it would evict nothing useful
                continue
            try:
                loaded = self._load(reply, pinned)
            except Later:
                later.append(reply)
                loaded = None
            if loaded is not None:
                fits = not batch or (
                    loaded.form != "cartridge"
                    and batch[0][1].form != "cartridge"
                    and len(pinned | {loaded.identity}) <= self.memories.cache_size
                )
                if fits:
                    batch.append((reply, loaded))
                    pinned.add(loaded.identity)
                else:
                    later.append(reply)
            if not candidates and not looked and batch and batch[0][1].form != "cartridge":
                looked = True  # once: what is put back is not taken again for this batch
                candidates = self._take_more(self.max_batch - len(batch))
        with self.changed:
            self.waiting.extendleft(reversed(later))
        return batch

    def _may_join(self, memory: Memory, batch: list[tuple[Reply, Loaded]], pinned: set[str]) -> bool:
        """Whether a reply reading `memory` may join `batch` (seen before loading it)."""
        if self.memories.is_cartridge(memory):
            return False
        return any(r.memory == memory for r, _ in batch) or len(pinned) < self.memories.cache_size

    def _load(self, reply: Reply, pinned: set[str]) -> Loaded | None:
        """The reply's memory loaded (None, with the error sent, when it cannot be)."""
        if reply.memory is None:
            return Loaded("__base__", "base", None)
        try:
            return self.memories.acquire(reply.memory, pinned)
        except ApiError as error:
            reply.on_event(("error", error))
        except Later:
            raise
        except Exception as error:
            log.exception("loading a memory failed")
            reply.on_event(
                ("error", ApiError(500, f"the memory could not be loaded ({type(error).__name__})", "server_error"))
            )
        return None

    def _take_more(self, most: int) -> list[Reply]:
        """Up to `most` waiting replies, in order (exclusive calls stay where they are)."""
        taken: list[Reply] = []
        with self.changed:
            for item in list(self.waiting):
                if len(taken) == most:
                    break
                if isinstance(item, Reply):
                    self.waiting.remove(item)
                    taken.append(item)
        return taken

    def _generate(self, batch: list[tuple[Reply, Loaded]]) -> None:
        replies = [reply for reply, _ in batch]
        memories = self.memories
        first_tokens = {r.prompt[0] for r in replies}
        pad = replies[0].prompt[0] if len(first_tokens) == 1 else self.tokenizer.pad_token_id
        width = max(len(r.prompt) for r in replies)
        ids = torch.tensor([[pad] * (width - len(r.prompt)) + r.prompt for r in replies])
        mask = torch.tensor([[0] * (width - len(r.prompt)) + [1] * len(r.prompt) for r in replies])
        settings = dict(
            max_new_tokens=max(r.max_tokens for r in replies),
            do_sample=False,
            repetition_penalty=REPLY_REPETITION_PENALTY,
            pad_token_id=self.tokenizer.pad_token_id,
            stopping_criteria=StoppingCriteriaList([_Tap(self, replies)]),
        )
        loaded = batch[0][1]
        with torch.inference_mode():
            if loaded.form == "cartridge":  # its own prefix cache: alone, any adapter switched off
                off = memories.peft.disable_adapter() if memories.peft is not None else nullcontext()
                with off:
                    loaded.handle.generate(input_ids=ids, attention_mask=mask, **settings)
            elif memories.peft is not None:
                names = [entry.adapter_name for _, entry in batch]
                memories.peft.generate(input_ids=ids, attention_mask=mask, adapter_names=names, **settings)
            else:
                memories.base.generate(input_ids=ids, attention_mask=mask, **settings)
        for reply in replies:  # ended by the budget of another row, or never begun (max_new_tokens reached)
            if reply.finish is None:
                self._end(reply, "length" if not reply.cancelled.is_set() else "cancelled")

    # -- a reply's pieces --------------------------------------------------------------------

    def _grow(self, reply: Reply, token: int) -> None:
        reply.ids.append(token)
        text = self.tokenizer.decode(reply.ids, skip_special_tokens=True)
        if text.startswith(reply.sent) and not text.endswith("\ufffd"):  # a whole character at least
            piece, reply.sent = text[len(reply.sent) :], text
            if piece:
                reply.on_event(("text", piece))

    def _end(self, reply: Reply, finish: str) -> None:
        reply.finish = finish
        text = self.tokenizer.decode(reply.ids, skip_special_tokens=True)
        if text.startswith(reply.sent) and len(text) > len(reply.sent):
            reply.on_event(("text", text[len(reply.sent) :]))
        ended = finish == "stop"
        usage = {
            "text": text,
            "prompt_tokens": len(reply.prompt),
            "completion_tokens": len(reply.ids) + ended,  # the end token counts, as OpenAI counts it
            "finish_reason": finish,
        }
        reply.on_event(("end", usage))


class _Tap(StoppingCriteria):
    """Called by `generate` after each step: hands each row's new token to its reply, and stops a row
    that ended, ran to its own budget or was cancelled."""

    def __init__(self, engine: Engine, replies: list[Reply]):
        self.engine, self.replies = engine, replies

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.BoolTensor:
        newest = input_ids[:, -1].tolist()
        done = []
        for reply, token in zip(self.replies, newest):
            if reply.finish is None:
                if reply.cancelled.is_set():
                    reply.finish = "cancelled"
                elif token in self.engine.stops:
                    self.engine._end(reply, "stop")
                else:
                    self.engine._grow(reply, token)
                    if len(reply.ids) >= reply.max_tokens:
                        self.engine._end(reply, "length")
            done.append(reply.finish is not None)
        return torch.tensor(done, dtype=torch.bool)
