"""Cartridges: one conversation's memory as a trained key/value prefix (Cartridges, arXiv 2506.06266),
one per conversation, composed at answer time and dropped to forget.

Where a cartridge sits. Every prompt paramem builds starts with a system message whose text begins
with SYSTEM_PROMPT. The cartridges are read right after that text, inside the system message:

    <|im_start|>system\\nYou remember ... this user. | cartridge 1 | cartridge 2 | <|im_end|>\\n<|im_start|>user ...
    '---------- head: h tokens, frozen ----------'                           '--- the rest of the prompt ---'

The teacher (distill.py) reads the same layout with the conversation's own tokens where a cartridge
sits ("\\n\\nOur conversation on <date>:\\n<text>"), so a cartridge holding the teacher's own keys and
values answers exactly as the teacher does (tests/test_cartridge.py). A cartridge starts as the keys
and values of the conversation's first tokens, `cartridge_fraction` of its length, and learns by
distillation while the base model stays frozen; it is learned alone, never beside the others, so it
depends on no other conversation and dropping it leaves the others exactly as they were.

Positions. A cartridge is made and learned at positions h .. h+p-1. Composed after cartridges of p'
tokens in all, its keys are re-rotated by p': a RoPE key at position t is the position-free key
rotated by t times each frequency, so rotating it by p' more is exactly the key at t + p' (values
carry no position). What the composition cannot make exact is what no cartridge saw while learning:
the other cartridges before it.

`CartridgeModel` wraps the base model so that every reader of the decoder gets the cartridges: the
training loss, the yes/no scorer and the shared-prompt cache call `decoder_and_head`, and `generate`
goes through the model. A prompt that does not start with the head is refused, never read without
the memory.
"""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerBase

from paramem.files import write_atomic
from paramem.model.prompts import SYSTEM_PROMPT, _ids, _template_parts

INDEX = "cartridges.json"


def memory_head(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The prompt tokens up to the end of SYSTEM_PROMPT: what every prompt starts with, and where
    the cartridges (or, for the teacher, the conversation) go."""
    before, _, _ = _template_parts(tokenizer, SYSTEM_PROMPT)
    cut = before.index(SYSTEM_PROMPT) + len(SYSTEM_PROMPT)
    head = _ids(tokenizer, before[:cut])
    if _ids(tokenizer, before) != head + _ids(tokenizer, before[cut:]):
        raise ValueError(
            "this tokenizer merges tokens across the end of the system prompt; cartridges need a clean cut"
        )
    return head


def slot_prompt(head: list[int], slot: list[int], prompt: list[int]) -> list[int]:
    """`prompt` (built with SYSTEM_PROMPT, so starting with `head`) with `slot` read after the head."""
    if prompt[: len(head)] != head:
        raise ValueError("a cartridge memory reads prompts built with paramem's system prompt")
    return head + slot + prompt[len(head) :]


def rotate_keys(keys: torch.Tensor, offset: int, inv_freq: torch.Tensor) -> torch.Tensor:
    """RoPE keys [..., positions, head_dim] moved `offset` positions later (HF's rotate-half layout)."""
    if offset == 0:
        return keys
    angles = offset * inv_freq.float()
    cos, sin = torch.cat([angles, angles]).cos(), torch.cat([angles, angles]).sin()
    half = keys.shape[-1] // 2
    rotated_half = torch.cat([-keys[..., half:], keys[..., :half]], dim=-1)
    return (keys.float() * cos + rotated_half.float() * sin).to(keys.dtype)


class Cartridge(torch.nn.Module):
    """One conversation's keys and values, [layers, kv heads, tokens, head dim] each, in float32,
    made for positions h .. h+tokens-1."""

    def __init__(self, conversation_id: str, keys: torch.Tensor, values: torch.Tensor, source: Path | None = None):
        super().__init__()
        self.conversation_id = conversation_id
        self.keys = torch.nn.Parameter(keys.float().clone(), requires_grad=False)  # clone: never an inference tensor
        self.values = torch.nn.Parameter(values.float().clone(), requires_grad=False)
        self.source = source  # the file it was read from, linked rather than rewritten when saved unchanged

    @property
    def tokens(self) -> int:
        return self.keys.shape[2]

    @property
    def nbytes(self) -> int:
        return self.keys.nbytes + self.values.nbytes

    def learnable(self, on: bool = True) -> Cartridge:
        self.keys.requires_grad_(on)
        self.values.requires_grad_(on)
        if on:
            self.source = None
        return self

    def save(self, path: Path) -> None:
        tensors = {"keys": self.keys.detach().contiguous(), "values": self.values.detach().contiguous()}
        save_file(tensors, str(path), metadata={"conversation_id": self.conversation_id})

    @classmethod
    def load(cls, path: Path, conversation_id: str) -> Cartridge:
        tensors = load_file(str(path))
        return cls(conversation_id, tensors["keys"], tensors["values"], source=path)


def cartridge_tokens(conversation_tokens: int, fraction: float, minimum: int) -> int:
    """A cartridge's size: `fraction` of the conversation's tokens, at least `minimum`, at most all."""
    return max(1, min(conversation_tokens, max(minimum, round(conversation_tokens * fraction))))


@torch.inference_mode()
def slot_cache(model: PreTrainedModel, head: list[int], slot: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The base model's keys and values of `slot` read after `head`, as a cartridge holds them."""
    out = model.get_decoder()(input_ids=torch.tensor([head + slot]), use_cache=True).past_key_values
    keys = torch.stack([layer.keys[0, :, len(head) :] for layer in out.layers])
    values = torch.stack([layer.values[0, :, len(head) :] for layer in out.layers])
    return keys.float(), values.float()


class CartridgeModel(torch.nn.Module):
    """The frozen base model with cartridges read after the head of every prompt."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, cartridges: list[Cartridge] = ()):
        super().__init__()
        self.model = model
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        self.head = memory_head(tokenizer)
        self.cartridges = torch.nn.ModuleList(cartridges)
        self.enabled = True
        self._head_cache: tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor] | None = None

    # -- what the readers call --------------------------------------------------------------

    @property
    def config(self):
        return self.model.config

    def get_output_embeddings(self) -> torch.nn.Module:
        return self.model.get_output_embeddings()

    def decoder_and_head(self) -> tuple[torch.nn.Module, torch.nn.Module]:
        return _PrefixedDecoder(self), self.model.get_output_embeddings()

    @contextmanager
    def disable_adapter(self):
        """The base model alone, as peft's `disable_adapter` gives it."""
        self.enabled = False
        try:
            yield
        finally:
            self.enabled = True

    @property
    def active(self) -> bool:
        return self.enabled and len(self.cartridges) > 0

    @property
    def prefix_tokens(self) -> int:
        """Tokens the composed cartridges add to every prompt (attention reads them all)."""
        return sum(c.tokens for c in self.cartridges) if self.active else 0

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, logits_to_keep: int = 0, **kwargs
    ):
        decoder, head = self.decoder_and_head()
        out = decoder(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        out.logits = head(out.last_hidden_state[:, -logits_to_keep:])  # as transformers does: 0 keeps all
        return out

    @torch.inference_mode()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        """The base model's `generate` with the composed cartridges as a filled cache: the prompt
        gets placeholder tokens where the cartridges sit (never computed: the cache holds them), and
        they are taken out of what is returned."""
        if not self.active:
            return self.model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        h, p = len(self.head), self.prefix_tokens
        self._check_head(input_ids)
        batch = input_ids.shape[0]
        filler = torch.full((batch, p), self.head[-1], dtype=input_ids.dtype)
        ids = torch.cat([input_ids[:, :h], filler, input_ids[:, h:]], dim=1)
        mask = None if attention_mask is None else _insert_ones(attention_mask, h, p)
        out = self.model.generate(
            input_ids=ids, attention_mask=mask, past_key_values=self.prefix_cache(batch), **kwargs
        )
        return torch.cat([out[:, :h], out[:, h + p :]], dim=1)

    def prompt_cache(self, prompt: list[int]) -> tuple[DynamicCache, int, list[int]]:
        """For a decoding loop of one's own (the server's): a cache holding the prompt's head and the
        composed cartridges, the positions it fills, and the prompt's tokens still to be read."""
        if not self.active:
            return DynamicCache(), 0, prompt
        self._check_head(torch.tensor([prompt]))
        h = len(self.head)
        return self.prefix_cache(1), h + self.prefix_tokens, prompt[h:]

    # -- the composed prefix ----------------------------------------------------------------

    def _check_head(self, input_ids: torch.Tensor) -> None:
        h = len(self.head)
        if input_ids.shape[1] <= h or not bool((input_ids[:, :h] == torch.tensor(self.head)).all()):
            raise ValueError("a cartridge memory reads prompts built with paramem's system prompt")

    def _head_kv(self) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        """The head's keys and values per layer, and its hidden states: the cartridges come after
        it, so they are the base model's, computed once."""
        if self._head_cache is None:
            with torch.inference_mode():
                out = self.model.get_decoder()(input_ids=torch.tensor([self.head]), use_cache=True)
            layers = out.past_key_values.layers
            self._head_cache = (
                [layer.keys.clone() for layer in layers],
                [layer.values.clone() for layer in layers],
                out.last_hidden_state.clone(),
            )
        return self._head_cache

    def prefix_cache(self, batch: int) -> DynamicCache:
        """The head's keys and values, then every cartridge's, each re-rotated to its place."""
        head_keys, head_values, _ = self._head_kv()
        inv_freq = self.model.get_decoder().rotary_emb.inv_freq
        dtype = head_keys[0].dtype
        parts, offset = [], 0
        for cartridge in self.cartridges:
            parts.append((rotate_keys(cartridge.keys, offset, inv_freq), cartridge.values))
            offset += cartridge.tokens
        cache = DynamicCache()
        for layer, (keys, values) in enumerate(zip(head_keys, head_values)):
            layer_keys = torch.cat([keys, *(k[layer].unsqueeze(0).to(dtype) for k, _ in parts)], dim=2)
            layer_values = torch.cat([values, *(v[layer].unsqueeze(0).to(dtype) for _, v in parts)], dim=2)
            cache.update(layer_keys.expand(batch, -1, -1, -1), layer_values.expand(batch, -1, -1, -1), layer)
        return cache

    # -- on disk ----------------------------------------------------------------------------

    def save_pretrained(self, folder: str | Path) -> None:
        """Each cartridge as its own safetensors file, and `cartridges.json` listing them in order.
        A cartridge read unchanged from an earlier version is hard-linked, not copied."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        index = []
        for number, cartridge in enumerate(self.cartridges):
            name = f"{number:05d}.safetensors"
            if cartridge.source is not None and cartridge.source.exists():
                try:
                    os.link(cartridge.source, folder / name)
                except OSError:
                    shutil.copyfile(cartridge.source, folder / name)
            else:
                cartridge.save(folder / name)
            index.append({"conversation_id": cartridge.conversation_id, "file": name, "tokens": cartridge.tokens})
        write_atomic(folder / INDEX, json.dumps({"head_tokens": len(self.head), "cartridges": index}, indent=1))

    @classmethod
    def from_pretrained(
        cls, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, folder: str | Path
    ) -> CartridgeModel:
        folder = Path(folder)
        index = json.loads((folder / INDEX).read_text(encoding="utf-8"))
        cartridges = [Cartridge.load(folder / item["file"], item["conversation_id"]) for item in index["cartridges"]]
        memory = cls(model, tokenizer, cartridges)
        if index["head_tokens"] != len(memory.head):
            raise ValueError(
                f"{folder}: cartridges made for a head of {index['head_tokens']} tokens, not {len(memory.head)}"
            )
        return memory


def _insert_ones(mask: torch.Tensor, at: int, count: int) -> torch.Tensor:
    ones = torch.ones((mask.shape[0], count), dtype=mask.dtype, device=mask.device)
    return torch.cat([mask[:, :at], ones, mask[:, at:]], dim=1)


class _PrefixedDecoder(torch.nn.Module):
    """The base decoder with the composed cartridges read after the head. Called on a whole prompt,
    it drops the head (the prefix cache holds it) and moves the rest past the cartridges; called
    with a cache it made earlier, it only moves positions and widens the attention mask."""

    def __init__(self, owner: CartridgeModel):
        super().__init__()
        self.owner = owner
        self.decoder = owner.model.get_decoder()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        past_key_values=None,
        use_cache: bool | None = None,
        **kwargs,
    ):
        owner = self.owner
        h, p = len(owner.head), owner.prefix_tokens  # p is 0 with the cartridges off
        batch, length = input_ids.shape
        # Off: the base decoder as it is. With a cache this decoder filled, which holds the head and
        # the cartridges already: only positions move and the mask widens.
        if not owner.active or past_key_values is not None:
            if position_ids is not None:
                position_ids = position_ids + p
            if attention_mask is not None:
                attention_mask = _insert_ones(attention_mask, h, p)
            return self.decoder(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                past_key_values=past_key_values,
                use_cache=use_cache,
                **kwargs,
            )
        owner._check_head(input_ids)
        if position_ids is None:
            position_ids = torch.arange(length).expand(batch, -1)
        if attention_mask is not None:
            attention_mask = _insert_ones(attention_mask[:, h:], 0, h + p)
        out = self.decoder(
            input_ids=input_ids[:, h:],
            attention_mask=attention_mask,
            position_ids=position_ids[:, h:] + p,
            past_key_values=owner.prefix_cache(batch),
            use_cache=use_cache,
            **kwargs,
        )
        # The head's hidden states, so that what is returned lines up with `input_ids`.
        head_hidden = owner._head_kv()[2].to(out.last_hidden_state.dtype).expand(batch, -1, -1)
        out.last_hidden_state = torch.cat([head_hidden, out.last_hidden_state], dim=1)
        return out
