"""One error type for bad input, so the CLI can print `FILE:LINE: reason` and exit 2."""

from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """Bad user input: a malformed file, an unknown user, an empty conversation.

    `str(error)` is the one line the CLI prints: `FILE:LINE: reason` (line omitted when unknown).
    """

    def __init__(self, reason: str, path: str | Path | None = None, line: int | None = None):
        self.reason = reason
        self.path = str(path) if path is not None else None
        self.line = line
        where = ""
        if self.path is not None:
            where = f"{self.path}:{line}: " if line is not None else f"{self.path}: "
        super().__init__(f"{where}{reason}")


def check_option(ok: bool, name: str, rule: str, value) -> None:
    """The one check every config dataclass runs on its fields (CLI and Python API alike): a bad value
    is bad input, `InputError("epochs (--epochs) must be at least 1, not 0")`."""
    if not ok:
        raise InputError(f"{name} must be {rule}, not {value!r}")


def user_file_problem(error: BaseException) -> str:
    """What is wrong with a file that would not load, in a few words, for a one-line error."""
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return f"cannot be read ({first[:160]})"
