"""A chat request's reply as the engine sees it: what it reads, and where its pieces go."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from paramem.serve.memories import Memory


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
    arrived: float = field(default_factory=time.monotonic)
    ids: list[int] = field(default_factory=list)  # the reply's tokens so far, the end token not among them
    sent: str = ""  # the text given out so far
    finish: str | None = None  # "stop", "length" or "cancelled" once it ended

    def cancel(self) -> None:
        self.cancelled.set()
