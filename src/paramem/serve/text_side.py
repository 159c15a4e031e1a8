"""The answer path's text side for the server: each user's retriever over their stored texts, built
once per state of their store and kept in a small LRU, so that a reply reads the passages retrieved
for its last message (read/respond.py) without indexing the texts again for every request."""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

from paramem.read.respond import Responder
from paramem.store.user import UserMemory


class TextSides:
    def __init__(self, tokenizer, home: Path | None, size: int):
        self.tokenizer, self.home, self.size = tokenizer, home, size
        self._cache: OrderedDict[tuple, Responder] = OrderedDict()
        self._lock = threading.Lock()

    def of(self, user: str) -> Responder:
        """`user`'s answer path with no model: where a reply reads from (its `source`) and the system
        prompt it is written under (`system_for`). Rebuilt when their texts or memory change."""
        memory = UserMemory(user, self.home)
        version = memory.current_version()
        key = (user, memory.store_id(), version, tuple(sorted(memory.texts.ids())))
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        conversations = memory.texts.conversations()
        responder = Responder(None, self.tokenizer, conversations, memory if version is not None else None)
        with self._lock:
            for old in [k for k in self._cache if k[0] == user]:  # an older state of this user's store
                del self._cache[old]
            self._cache[key] = responder
            while len(self._cache) > self.size:
                self._cache.popitem(last=False)
        return responder
