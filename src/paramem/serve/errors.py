"""The server's one error type, and what of an error a client may read."""

from __future__ import annotations

import re

from paramem.errors import InputError

# An absolute file path in a message: it tells a client how the server's disk is laid out.
_PATH = re.compile(r"(?<![\w.~])/(?:[^\s:'\"/]+/)*[^\s:'\",]*")


class ApiError(Exception):
    """A request that cannot be answered: its HTTP status, a message for the client and the OpenAI
    error type."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", retry_after: int | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.retry_after = status, message, kind, retry_after


class Later(Exception):
    """A request that cannot join the batch being formed (its memory changed version under it)."""


def public_reason(error: BaseException) -> str:
    """An error's reason with every file path taken out (the server's log keeps the whole error)."""
    reason = error.reason if isinstance(error, InputError) else str(error)
    return _PATH.sub("…", reason)
