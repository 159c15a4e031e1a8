"""The compute dtype, chosen by measuring this CPU rather than assumed.

CPUs differ by a factor of fifty on bf16: with AMX or AVX512-BF16 a bf16 matrix product is several
times faster than a float32 one, while on an AVX2-only CPU (most laptops, many servers) it is ~50x
slower (an AMD EPYC here: 1.2 against 68.8 GFLOP/s), and a demo that takes minutes takes hours.
So on first use paramem times a short bf16 and float32 product at the model's sizes, keeps the
faster, and caches the answer per machine. `--dtype` or `PARAMEM_DTYPE` overrides it.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import time
from dataclasses import asdict, dataclass

import torch

from paramem.config import dtype_name
from paramem.files import cache_home, write_atomic

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
DTYPE_ENV = "PARAMEM_DTYPE"
# CPU flags that decide bf16 speed (x86: AMX tiles, AVX512-BF16; ARM: the BF16 extension).
BF16_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "bf16")


def cpu_info() -> dict:
    """The CPU's model name and its bf16-relevant flags, for results files and the dtype cache key."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model in ("", platform.machine(), platform.processor()):
                    model = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = set(value.split())
    except OSError:  # not Linux: the flags stay unknown, the measurement still decides
        pass
    return {
        "model": model,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "bf16_flags": {flag: flag in flags for flag in BF16_FLAGS},
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def matmul_gflops(
    dtype: torch.dtype, rows: int = 128, hidden: int = 896, intermediate: int = 4864, budget_s: float = 0.25
) -> float:
    """GFLOP/s of [rows x hidden] @ [hidden x intermediate] in `dtype` (one warm-up, then as many
    products as fit in `budget_s`, at least one)."""
    a = torch.randn(rows, hidden).to(dtype)
    b = torch.randn(hidden, intermediate).to(dtype)
    torch.matmul(a, b)
    count, start = 0, time.perf_counter()
    while True:
        torch.matmul(a, b)
        count += 1
        elapsed = time.perf_counter() - start
        if elapsed >= budget_s:
            return 2 * rows * hidden * intermediate * count / elapsed / 1e9


@dataclass(frozen=True)
class DtypeChoice:
    name: str  # "float32" or "bfloat16"
    source: str  # "requested", "environment", "stored", "measured" or "cached"
    gflops: dict[str, float] | None = None  # what was measured, when it was

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.name]


def _cache_file():
    return cache_home() / "dtype.json"


def measured_dtype(hidden: int = 896, intermediate: int = 4864) -> DtypeChoice:
    """The faster dtype on this machine at these sizes, measured once and cached per machine."""
    key = json.dumps({"cpu": cpu_info(), "hidden": hidden, "intermediate": intermediate}, sort_keys=True)
    path = _cache_file()
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cached = {}
    if not isinstance(cached, dict):
        cached = {}
    if isinstance(cached.get(key), dict) and cached[key].get("name") in DTYPES:
        return DtypeChoice(cached[key]["name"], "cached", cached[key].get("gflops"))
    gflops = {
        name: round(matmul_gflops(dtype, hidden=hidden, intermediate=intermediate), 2) for name, dtype in DTYPES.items()
    }
    choice = DtypeChoice(max(gflops, key=gflops.get), "measured", gflops)
    cached[key] = {"name": choice.name, "gflops": gflops}
    try:
        write_atomic(path, json.dumps(cached, indent=1))
    except OSError:  # a read-only cache only costs a measurement next time
        pass
    return choice


def choose_dtype(
    requested: str | None = None, stored: str | None = None, hidden: int = 896, intermediate: int = 4864
) -> DtypeChoice:
    """The compute dtype, first of: `requested` (--dtype), $PARAMEM_DTYPE, `stored` (what a memory
    was learned in), the faster one measured on this machine."""
    if requested:
        return DtypeChoice(dtype_name(requested), "requested")
    if os.environ.get(DTYPE_ENV, "").strip():
        return DtypeChoice(dtype_name(os.environ[DTYPE_ENV]), "environment")
    if stored:
        return DtypeChoice(dtype_name(stored), "stored")
    return measured_dtype(hidden, intermediate)


def describe(choice: DtypeChoice) -> dict:
    """The choice as results files record it."""
    return {k: v for k, v in asdict(choice).items() if v is not None}


def resident_bytes() -> int | None:
    """This process's resident memory now (Linux; None elsewhere)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def release_freed_memory() -> int | None:
    """Hand the heap pages freed so far back to the OS, and return the resident bytes after.

    Why: a long run loads a model, trains and frees it session after session; glibc keeps what was
    freed in its arenas, so a 29-session LoCoMo run grew ~0.5 GB a session while its live tensors did
    not. Where glibc's `malloc_trim` is missing (musl, macOS) this only measures."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    return resident_bytes()
