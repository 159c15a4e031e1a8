"""The generation engine: one thread owns the model, takes replies from a queue and decodes them
together, several users' memories in one forward pass, a reply joining or leaving between any two
decoding steps (continuous batching).

Why one thread: peft's adapters live in the one base model, and loading or deleting one changes the
model under any generation running. Here only the engine's thread loads, evicts and generates, and a
memory read by a running reply is never evicted (`Memories.in_use`), so a reply reads the same
adapter from its first token to its last.

Why continuous batching: on a CPU a decoding step of eight rows costs little more than one, and a
reply that arrives while others decode should not wait for the longest of them to end. The replies
that start together read their prompts in one pass (left-padded and masked, so each reads as alone),
and their keys and values join the batch's cache. Each step feeds every row its last token through
its own adapter (peft's `adapter_names`). docs/serving.md has the whole picture and the figures.

Nothing here blocks the event loop: a request is put in the queue, and what it yields comes back
through `on_event`, which the app hands to the loop. A cancelled request (a client gone, the server
stopping) leaves the batch at the next decoding step.
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
import torch.nn.functional as F
from transformers import DynamicCache, RepetitionPenaltyLogitsProcessor

from paramem.config import REPLY_REPETITION_PENALTY
from paramem.serve.errors import ApiError, Later
from paramem.serve.memories import Loaded, Memories
from paramem.serve.reply import Reply

log = logging.getLogger("paramem.serve")


@dataclass
class _Call:
    """Exclusive work on the engine's thread (a recollection), given the memories; its result in `future`."""

    work: Callable[[Memories], object]
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)


@dataclass
class _Row:
    """A reply being decoded: its memory, what it has read, and the token it reads next."""

    reply: Reply
    loaded: Loaded
    read: list[int]  # every token the row has read (the repetition penalty's set)
    length: int  # positions its keys and values fill in the batch's cache, padding not counted
    next_token: int


class Engine:
    def __init__(self, memories: Memories, max_batch: int, max_waiting: int, prefill_wait: float = 0.0):
        self.memories = memories
        self.prefill_wait = prefill_wait  # how long a reply may wait while others decode, to start with more
        self.tokenizer = memories.tokenizer
        self.max_batch, self.max_waiting = max_batch, max_waiting
        stops = memories.base.generation_config.eos_token_id or self.tokenizer.eos_token_id
        self.stops = set(stops if isinstance(stops, list) else [stops])  # Qwen ends a turn on two tokens
        self.penalty = RepetitionPenaltyLogitsProcessor(REPLY_REPETITION_PENALTY)
        self.waiting: deque[Reply | _Call] = deque()
        self.rows: list[_Row] = []  # the batch, in the order of the cache's rows
        self.cache: DynamicCache | None = None  # the rows' keys and values, left-padded to one width
        self.mask: torch.Tensor | None = None  # which of the cache's positions each row reads
        self.changed = threading.Condition()
        self.stopping = False
        self.steps = 0  # decoding steps run, and the rows they held (the load benchmark reads them)
        self.row_steps = 0
        self.thread = threading.Thread(target=self._serve, name="paramem-engine", daemon=True)
        memories.owner = self.thread
        self.thread.start()

    @property
    def running(self) -> list[Reply]:
        """The replies being decoded now."""
        return [row.reply for row in self.rows]

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
        gone = ApiError(503, "the server is shutting down", "server_error")
        for item in waiting:
            if isinstance(item, Reply):
                item.on_event(("error", gone))
            else:
                item.future.set_exception(gone)
        self.thread.join(seconds)

    # -- the engine's thread -----------------------------------------------------------------

    def _serve(self) -> None:
        while True:
            with self.changed:
                while not self.waiting and not self.rows and not self.stopping:
                    self.changed.wait()
                if self.stopping:
                    break
            try:
                self._admit()
                if self.rows:
                    self._step()
            except Exception as error:  # never let one failure end the engine: fail the batch, go on
                log.exception("a decoding step failed")
                self._fail_rows(ApiError(500, f"the generation failed ({type(error).__name__})", "server_error"))
        self._fail_rows(ApiError(503, "the server is shutting down", "server_error"))

    def _admit(self) -> None:
        """Between two steps: run the waiting calls, and start each waiting reply that fits the batch
        (in order; one that does not fit yet keeps its place). The replies starting together read
        their prompts in one forward pass."""
        with self.changed:
            waiting, self.waiting = list(self.waiting), deque()
        kept: list[Reply | _Call] = []
        starting: list[tuple[Reply, Loaded]] = []
        replies = [item for item in waiting if isinstance(item, Reply)]
        # A prompt read alone costs a CPU 3x its share of one read with others (0.5B, bf16, 2 cores: 1.0 s
        # alone, 2.7 s for eight), and the running replies wait for it. So while others decode, replies
        # start once they would fill the batch, or once the first has waited `prefill_wait`.
        oldest = min((r.arrived for r in replies), default=time.monotonic())
        full = len(replies) >= self.max_batch - len(self.rows)
        ready = not self.rows or full or time.monotonic() - oldest >= self.prefill_wait
        for item in waiting:
            if self.stopping or (isinstance(item, Reply) and not ready):
                kept.append(item)
            elif isinstance(item, _Call):
                self._run_call(item)
            elif item.cancelled.is_set():
                continue
            elif not self._fits(item, starting):
                kept.append(item)
            else:
                try:
                    loaded = self._load(item)
                except Later:
                    kept.append(item)
                    continue
                if loaded is not None:  # else its error was sent
                    starting.append((item, loaded))
                    self._rows_changed(starting)  # loading the next memory never evicts this one
        with self.changed:
            self.waiting.extendleft(reversed(kept))  # before what arrived meanwhile
        if starting:
            self._start(starting)

    def _run_call(self, call: _Call) -> None:
        if not call.future.set_running_or_notify_cancel():
            return
        try:
            call.future.set_result(call.work(self.memories))
        except BaseException as error:
            call.future.set_exception(error)

    def _fits(self, reply: Reply, starting: list[tuple[Reply, Loaded]]) -> bool:
        """Whether `reply` can start now: the batch has a row for it, and its memory is read by the
        batch already or a slot of the cache is free (a running reply's memory is never evicted)."""
        if len(self.rows) + len(starting) >= self.max_batch:
            return False
        if reply.memory is None:
            return True
        others = [row.reply for row in self.rows] + [r for r, _ in starting]
        return any(r.memory == reply.memory for r in others) or len(self.memories.in_use) < self.memories.cache_size

    def _start(self, starting: list[tuple[Reply, Loaded]]) -> None:
        """Prefill the starting replies (the cartridge memories each alone, since their caches begin
        with their cartridges; the rest together), hand each its first token, and add to the batch
        those it did not end."""
        for reply, _ in starting:
            reply.on_event(("start",))
        together = [s for s in starting if s[1].form != "cartridge"]
        groups = ([together] if together else []) + [[s] for s in starting if s[1].form == "cartridge"]
        for group in groups:
            try:
                rows, cache, mask = self._prefill(group)
            except Exception as error:
                log.exception("a prefill failed")
                failed = ApiError(500, f"the generation failed ({type(error).__name__})", "server_error")
                for reply, _ in group:
                    reply.on_event(("error", failed))
                continue
            going = [i for i, row in enumerate(rows) if self._take(row, row.next_token)]
            if going:
                self._join([rows[i] for i in going], cache, _select(cache, mask, going))
        self._rows_changed()

    def _load(self, reply: Reply) -> Loaded | None:
        """The reply's memory loaded (None, with the error sent, when it cannot be)."""
        if reply.memory is None:
            return Loaded("__base__", "base", None)
        try:
            return self.memories.acquire(reply.memory)
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

    # -- decoding ------------------------------------------------------------------------------

    def _prefill(self, group: list[tuple[Reply, Loaded]]) -> tuple[list[_Row], DynamicCache, torch.Tensor]:
        """The group's prompts read in one forward pass, left-padded (the padding masked, so each row
        reads as it would alone): their rows with their first tokens chosen, their cache and its mask."""
        cache, start = DynamicCache(), 0
        feeds = [reply.prompt for reply, _ in group]
        if group[0][1].form == "cartridge":  # alone; the cartridges' keys and values are the base model's
            peft = self.memories.peft
            with peft.disable_adapter() if peft is not None else nullcontext(), torch.inference_mode():
                cache, start, feed = group[0][1].handle.prompt_cache(group[0][0].prompt)
            feeds = [feed]
        width = max(len(feed) for feed in feeds)
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.tensor([[pad] * (width - len(feed)) + feed for feed in feeds])
        mask = torch.tensor([[1] * start + [0] * (width - len(feed)) + [1] * len(feed) for feed in feeds])
        positions = (mask.cumsum(1) - 1).clamp(min=0)[:, start:]
        logits = self._forward(ids, cache, mask, positions, [loaded for _, loaded in group])
        rows = []
        for i, (reply, loaded) in enumerate(group):
            row = _Row(reply, loaded, list(reply.prompt), start + len(feeds[i]), 0)
            row.next_token = self._choose(logits[i], row.read)
            rows.append(row)
        return rows, cache, mask

    def _step(self) -> None:
        """One decoding step of every row: each reads its last token and chooses its next."""
        ids = torch.tensor([[row.next_token] for row in self.rows])
        positions = torch.tensor([[row.length] for row in self.rows])
        self.mask = F.pad(self.mask, (0, 1), value=1)
        logits = self._forward(ids, self.cache, self.mask, positions, [row.loaded for row in self.rows])
        self.steps += 1
        self.row_steps += len(self.rows)
        going = []
        for i, row in enumerate(self.rows):
            row.read.append(row.next_token)
            row.length += 1
            if self._take(row, self._choose(logits[i], row.read)):
                going.append(i)
        if len(going) < len(self.rows):
            self._keep(going)

    def _forward(self, ids, cache, mask, positions, memories: list[Loaded]) -> torch.Tensor:
        """The next-token logits of each row, each through its own memory's adapter."""
        model, extra = self.memories.base, {}
        if self.memories.peft is not None:
            model, extra = self.memories.peft, {"adapter_names": [m.adapter_name for m in memories]}
        with torch.inference_mode():
            out = model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=positions,
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
                **extra,
            )
        return out.logits[:, -1].float()

    def _choose(self, logits: torch.Tensor, read: list[int]) -> int:
        """Greedy decoding, with the repetition penalty `generate` would apply over what the row read."""
        if self.penalty.penalty != 1.0:
            logits = self.penalty(torch.tensor([read]), logits[None])[0]
        return int(logits.argmax())

    def _take(self, row: _Row, token: int) -> bool:
        """Hand `token` to the row's reply; False once the reply ended (or was cancelled)."""
        reply = row.reply
        if reply.cancelled.is_set():
            reply.finish = "cancelled"
            return False
        if token in self.stops:
            self._end(reply, "stop")
            return False
        self._grow(reply, token)
        if len(reply.ids) >= reply.max_tokens:
            self._end(reply, "length")
            return False
        row.next_token = token
        return True

    # -- the batch's cache ---------------------------------------------------------------------

    def _join(self, rows: list[_Row], cache: DynamicCache, mask: torch.Tensor) -> None:
        """Add prefilled rows to the batch: both caches left-padded to one width, the padding masked."""
        if not self.rows:
            self.cache, self.mask = cache, mask
        else:
            width = max(self.mask.shape[1], mask.shape[1])
            for layer, new in zip(self.cache.layers, cache.layers):
                layer.keys = torch.cat([_pad_left(layer.keys, width), _pad_left(new.keys, width)])
                layer.values = torch.cat([_pad_left(layer.values, width), _pad_left(new.values, width)])
            self.mask = torch.cat([_pad_left(self.mask, width), _pad_left(mask, width)])
        self.rows += rows

    def _keep(self, going: list[int]) -> None:
        """Drop the rows that ended, and the cache's leading positions no row reads any more."""
        self.rows = [self.rows[i] for i in going]
        if self.rows:
            self.mask = _select(self.cache, self.mask, going)
        else:
            self.cache = self.mask = None
        self._rows_changed()

    def _rows_changed(self, starting: list[tuple[Reply, Loaded]] = ()) -> None:
        """The memories the batch reads (and those of replies about to join it), which eviction skips."""
        with self.changed:
            self.memories.in_use = {row.loaded.identity for row in self.rows} | {m.identity for _, m in starting}

    def _fail_rows(self, error: ApiError) -> None:
        for row in self.rows:
            if row.reply.finish is None:
                row.reply.finish = "error"
                row.reply.on_event(("error", error))
        self._keep([])

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


def _select(cache: DynamicCache, mask: torch.Tensor, rows: list[int]) -> torch.Tensor:
    """Keep only `rows` of the cache (in place) and of its mask, and the positions they read from the
    first on; the mask of what is kept."""
    if rows == list(range(mask.shape[0])):
        return mask
    index = torch.tensor(rows)
    mask = mask[index]
    first = int(mask.any(0).float().argmax())  # the first position a kept row reads
    for layer in cache.layers:
        layer.keys = layer.keys[index, :, first:]
        layer.values = layer.values[index, :, first:]
    return mask[:, first:]


def _pad_left(tensor: torch.Tensor, width: int) -> torch.Tensor:
    """`tensor` (keys or values [rows, heads, positions, dim], or a mask [rows, positions]) with zeros
    before its positions, to `width` positions."""
    missing = width - tensor.shape[-2 if tensor.dim() == 4 else -1]
    if missing == 0:
        return tensor
    return F.pad(tensor, (0, 0, missing, 0) if tensor.dim() == 4 else (missing, 0))
