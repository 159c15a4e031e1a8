"""A user's bearer token for `paramem serve`: made once, shown once, and only its SHA-256 kept."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from paramem.files import write_atomic_bytes

if TYPE_CHECKING:  # the memory holds its tokens; this module needs only its folder
    from paramem.store.user import UserMemory


class Tokens:
    def __init__(self, memory: UserMemory):
        self.memory = memory

    @property
    def file(self) -> Path:
        return self.memory.root / "token.sha256"

    def new(self) -> str:
        """A new bearer token for this user, replacing any earlier one."""
        token = f"pm-{secrets.token_urlsafe(32)}"
        self.memory.create()  # a user with a token exists, even before anything is learned (uploads)
        write_atomic_bytes(self.file, hashlib.sha256(token.encode()).hexdigest().encode())
        return token

    def matches(self, token: str) -> bool:
        if not self.file.exists():
            return False
        expected = self.file.read_bytes().decode().strip()
        return hmac.compare_digest(expected, hashlib.sha256(token.encode()).hexdigest())
