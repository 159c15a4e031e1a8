"""Where paramem keeps its files (the store, the model cache), and writing them so that a crash, a
Ctrl-C or a power cut never leaves half of one behind."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same folder, flushed to disk, then renamed
    over it: a reader sees the old file or the new one, never a mix. Safe with several writers."""
    write_atomic_bytes(path, text.encode("utf-8"))


def write_atomic_bytes(path: Path, data: bytes) -> None:
    """`write_atomic` for bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_tree(folder: Path) -> None:
    """Flush every file under `folder`, and the folder itself, to disk."""
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as file:
                os.fsync(file.fileno())
    fsync_dir(folder)


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (a rename into it, a new file) to disk."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def cache_home() -> Path:
    """Where dequantized presets live: $PARAMEM_CACHE, else ~/.cache/paramem."""
    return Path(os.environ.get("PARAMEM_CACHE", Path.home() / ".cache" / "paramem"))


def paramem_home() -> Path:
    """$PARAMEM_HOME, else ~/.local/share/paramem."""
    default = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "paramem"
    return Path(os.environ.get("PARAMEM_HOME", default))
