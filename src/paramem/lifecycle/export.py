"""Export: a user's memory in a form other tools load.

  peft    the adapter folder as it is (adapter_config.json + adapter_model.safetensors): any PEFT
          loader, and vLLM's multi-LoRA serving, read it beside the base model paramem used (docs/serving.md)
  merged  the base model with the adapter merged into its weights, with the tokenizer: a plain
          Hugging Face model folder, no PEFT needed

A cartridge memory has no adapter: its cartridges are key/value prefixes that only paramem's own
readers compose, and vLLM cannot serve them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from paramem.config import Form
from paramem.errors import InputError
from paramem.read.loading import load_memory
from paramem.store.user import UserMemory

FORMATS = ("peft", "merged")


def export(user: str, out: Path, format: str = "peft", home: Path | None = None, dtype: str | None = None) -> Path:
    if format not in FORMATS:
        raise InputError(f"unknown export format {format!r} (available: {', '.join(FORMATS)})")
    memory = UserMemory(user, home).require()
    if memory.form == Form.CARTRIDGE:
        raise InputError(
            f"user {user!r} is a cartridge memory: there is no adapter to export, and vLLM cannot serve cartridges"
        )
    if out.exists() and any(out.iterdir()):
        raise InputError("the export folder is not empty", path=out)
    if format == "peft":
        with memory.reading() as folder:
            shutil.copytree(folder, out, ignore=shutil.ignore_patterns("recall.json"), dirs_exist_ok=True)
        return out

    model, tokenizer, _ = load_memory(user, home, dtype)
    model.merge_and_unload().save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
