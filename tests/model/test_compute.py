import json
import sys

import pytest
import torch

from paramem.config import dtype_name
from paramem.errors import InputError
from paramem.model import compute
from paramem.model.compute import (
    choose_dtype,
    cpu_info,
    matmul_gflops,
    measured_dtype,
    release_freed_memory,
    resident_bytes,
)


@pytest.fixture
def dtype_cache(tmp_path, monkeypatch):
    path = tmp_path / "dtype.json"
    monkeypatch.setattr(compute, "_cache_file", lambda: path)
    monkeypatch.delenv(compute.DTYPE_ENV, raising=False)
    return path


def fixed_speeds(monkeypatch, speeds: dict[str, float]) -> list[torch.dtype]:
    """Replace the timing with known speeds; returns the dtypes timed."""
    timed = []

    def fake(dtype, **sizes):
        timed.append(dtype)
        return speeds[{torch.float32: "float32", torch.bfloat16: "bfloat16"}[dtype]]

    monkeypatch.setattr(compute, "matmul_gflops", fake)
    return timed


def test_dtype_names_and_aliases():
    assert dtype_name("bf16") == "bfloat16" and dtype_name(" FP32 ") == "float32"
    with pytest.raises(InputError, match="unknown dtype 'float16'"):
        dtype_name("float16")


@pytest.mark.parametrize(
    "speeds, chosen",
    [
        ({"float32": 68.8, "bfloat16": 1.2}, "float32"),  # AVX2 only
        ({"float32": 200.0, "bfloat16": 600.0}, "bfloat16"),
    ],
)  # AMX
def test_the_faster_dtype_is_kept_and_cached_per_machine(dtype_cache, monkeypatch, speeds, chosen):
    timed = fixed_speeds(monkeypatch, speeds)
    first = measured_dtype()
    assert (first.name, first.source) == (chosen, "measured") and len(timed) == 2
    again = measured_dtype()
    assert (again.name, again.source) == (chosen, "cached") and len(timed) == 2  # no second measurement
    assert chosen in dtype_cache.read_text()
    measured_dtype(hidden=64, intermediate=128)  # other sizes: measured on their own
    assert len(timed) == 4


def test_a_corrupt_dtype_cache_is_measured_again(dtype_cache, monkeypatch):
    dtype_cache.write_text("{not json")
    fixed_speeds(monkeypatch, {"float32": 2.0, "bfloat16": 1.0})
    assert measured_dtype().name == "float32"
    assert len(json.loads(dtype_cache.read_text())) == 1


def test_precedence_requested_then_environment_then_stored_then_measured(dtype_cache, monkeypatch):
    fixed_speeds(monkeypatch, {"float32": 1.0, "bfloat16": 2.0})
    assert choose_dtype().name == "bfloat16"
    assert choose_dtype(stored="float32").source == "stored"
    monkeypatch.setenv(compute.DTYPE_ENV, "fp32")
    assert (choose_dtype(stored="bfloat16").name, choose_dtype().source) == ("float32", "environment")
    assert choose_dtype("bf16").name == "bfloat16"
    monkeypatch.setenv(compute.DTYPE_ENV, "int8")
    with pytest.raises(InputError, match="unknown dtype"):
        choose_dtype()


def test_real_measurement_and_cpu_facts():
    assert matmul_gflops(torch.float32, rows=8, hidden=32, intermediate=64, budget_s=0.01) > 0
    info = cpu_info()
    assert info["model"] and info["cpus"] >= 1
    assert set(info["bf16_flags"]) == set(compute.BF16_FLAGS)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="resident memory is read from /proc")
def test_freed_memory_goes_back_to_the_os():
    before = release_freed_memory()
    # Many small tensors: glibc serves them from its arenas (not mmap), so freeing alone keeps the pages.
    held = [torch.ones(4096) for _ in range(30_000)]  # ~0.5 GB
    during = resident_bytes()
    del held
    after = release_freed_memory()
    assert during - before > 0.4e9
    assert after - before < 0.1e9
