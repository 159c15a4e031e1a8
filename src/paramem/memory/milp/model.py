"""MiLP: a user's memory as several LoRAs on the feed-forward layers, learned from the history's text
and then instruction-tuned to reply as the assistant would (MiLP paper, section 2).

How the paper's search space becomes one peft LoRA (`lora_config`):

- One LoRA is a rank-r adapter on one layer's feed-forward block: gate_proj, up_proj and down_proj each
  become h = W x + (alpha / r) B A x. Attention is left alone (the paper injects into the FFN only).
- The layer mask chooses m layers. The n LoRAs are spread over them as evenly as possible: the j-th
  chosen layer (0-based, in depth order) holds floor((j+1) n / m) - floor(j n / m) of them. With n < m
  that is n layers spaced evenly among the chosen ones; with n >= m every chosen layer holds one or more.
- k LoRAs of rank r on the same module are one LoRA of rank k r: their updates B_i A_i add up to the
  product of the stacked matrices. So a layer holding k of them gets rank k r (`rank_pattern`) and alpha
  k alpha (`alpha_pattern`), which keeps each one's scale alpha / r. Layers holding none are left out
  (`layers_to_transform`).
- The memory then has n x (parameters of one LoRA) weights, the paper's eq. 6, and is a standard adapter
  that `PeftModel.from_pretrained` loads. n = 0 is no memory: the base model.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import PreTrainedModel, PreTrainedTokenizerBase, get_linear_schedule_with_warmup

from paramem.config import MiLPTrainConfig, MultiLoraConfig
from paramem.data.conversations import Conversation, Message
from paramem.memory.batching import batches, training_loss
from paramem.model.loading import unwrapped
from paramem.model.prompts import Encoded

FFN_MODULES = ("gate_proj", "up_proj", "down_proj")
# Short: every training example pays for these tokens.
REPLY_SYSTEM = "You are talking with this user again. Reply in a sentence or two."


def model_depth(model: torch.nn.Module) -> int:
    """The number of transformer layers (through a peft wrapper)."""
    return unwrapped(model).config.num_hidden_layers


def placement(config: MultiLoraConfig, depth: int) -> dict[int, int]:
    """How many of the n LoRAs each layer holds: {layer: count}, layers holding none left out."""
    config.check_depth(depth)
    chosen = config.layers if config.layers is not None else list(range(depth))
    m, n = len(chosen), config.loras
    counts = {layer: (j + 1) * n // m - j * n // m for j, layer in enumerate(chosen)}
    return {layer: count for layer, count in counts.items() if count > 0}


def lora_config(config: MultiLoraConfig, depth: int) -> LoraConfig | None:
    """The one peft LoRA equal to the n LoRAs of `config` (module docstring); None for n = 0."""
    held = placement(config, depth)
    if not held:
        return None
    alpha = config.scale * config.rank
    # Patterns are matched as `(.*\.)?{key}$` against module names such as model.layers.3.mlp.up_proj.
    rank_pattern = {rf"layers\.{layer}\.mlp\.\w+": count * config.rank for layer, count in held.items()}
    alpha_pattern = {rf"layers\.{layer}\.mlp\.\w+": count * alpha for layer, count in held.items()}
    return LoraConfig(
        r=config.rank,
        lora_alpha=alpha,
        target_modules=list(FFN_MODULES),
        layers_to_transform=sorted(held),
        rank_pattern=rank_pattern,
        alpha_pattern=alpha_pattern,
        lora_dropout=0.0,
        task_type="CAUSAL_LM",
    )


def parameter_count(config: MultiLoraConfig, model: torch.nn.Module) -> int:
    """Weights of the memory: r (in + out) per LoRA and projection, summed over the n LoRAs."""
    c = unwrapped(model).config
    per_lora = config.rank * 3 * (c.hidden_size + c.intermediate_size)  # gate, up: d -> f; down: f -> d
    return per_lora * config.loras


def attach(model: PreTrainedModel, config: MultiLoraConfig, seed: int = 0) -> torch.nn.Module:
    """The base model with a fresh MiLP memory (the base model itself for n = 0)."""
    peft_config = lora_config(config, model_depth(model))
    if peft_config is None:
        return model
    torch.manual_seed(seed)
    return get_peft_model(model, peft_config)


# ---------------------------------------------------------------------------------------------
# Training examples


def chat_messages(context: list[Message], turns: int) -> list[dict[str, str]]:
    """The last `turns` messages of the dialogue so far, as chat messages."""
    return [{"role": m.role, "content": m.content} for m in context[-turns:] if m.role in ("user", "assistant")]


def reply_prompt_ids(
    tokenizer: PreTrainedTokenizerBase, context: list[Message], config: MiLPTrainConfig, system: str = REPLY_SYSTEM
) -> list[int]:
    """The prompt of a reply: the system line and the dialogue so far, cut from the left to fit."""
    turns = config.context_turns
    while True:
        chat = [{"role": "system", "content": system}, *chat_messages(context, turns)]
        ids = tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_dict=True)["input_ids"]
        if len(ids) <= config.max_length - config.max_new_tokens or turns == 1:
            return ids[-(config.max_length - config.max_new_tokens) :]
        turns -= 1


def reply_example(
    tokenizer: PreTrainedTokenizerBase, context: list[Message], reply: str, config: MiLPTrainConfig
) -> Encoded:
    """Instruction tuning's example: the prompt (weight 0) and the reply with its end marker (weight 1)."""
    prompt = reply_prompt_ids(tokenizer, context, config)
    answer = tokenizer(reply, add_special_tokens=False)["input_ids"][: config.max_new_tokens * 2]
    end = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    return Encoded(prompt + answer + end, [0.0] * len(prompt) + [1.0] * (len(answer) + len(end)))


def assistant_turns(conversation: Conversation) -> list[tuple[list[Message], str]]:
    """(dialogue so far, reply) for every assistant turn that follows something."""
    messages = list(conversation.messages)
    return [(messages[:i], m.content) for i, m in enumerate(messages) if m.role == "assistant" and i > 0]


def reply_examples(
    tokenizer: PreTrainedTokenizerBase, conversations: list[Conversation], config: MiLPTrainConfig
) -> list[Encoded]:
    return [reply_example(tokenizer, c, r, config) for conv in conversations for c, r in assistant_turns(conv)]


def history_examples(
    tokenizer: PreTrainedTokenizerBase, conversations: list[Conversation], config: MiLPTrainConfig
) -> list[Encoded]:
    """Memory injection's examples: each conversation's text in windows of `max_length` tokens, every
    token trained."""
    examples = []
    for conversation in conversations:
        ids = tokenizer(conversation.text, add_special_tokens=False)["input_ids"]
        for start in range(0, len(ids), config.max_length):
            window = ids[start : start + config.max_length]
            if len(window) > 1:
                examples.append(Encoded(window, [1.0] * len(window)))
    return examples


# ---------------------------------------------------------------------------------------------
# Training and reading


@dataclass
class StageReport:
    stage: str  # "memory" or "instruction"
    epoch: int
    loss: float
    seconds: float


def fit(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    examples: list[Encoded],
    epochs: int,
    config: MiLPTrainConfig,
    stage: str,
    on_epoch: Callable[[StageReport], None] | None = None,
) -> float:
    """Train the model's trainable weights on `examples` (AdamW, linear warm-up then decay); the last
    epoch's mean loss."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable or not examples or epochs == 0:
        return float("nan")
    rng = random.Random(config.seed)
    steps = epochs * -(-len(examples) // config.batch_size)
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
    schedule = get_linear_schedule_with_warmup(optimizer, int(config.warmup_share * steps), steps)
    model.train()
    loss_value = float("nan")
    for epoch in range(1, epochs + 1):
        start, total, count = time.perf_counter(), 0.0, 0
        for batch in batches(examples, config.batch_size, tokenizer.pad_token_id, config.max_length, rng):
            loss = training_loss(model, batch)
            loss.backward()
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            total, count = total + loss.item(), count + 1
        loss_value = total / max(count, 1)
        if on_epoch is not None:
            on_epoch(StageReport(stage, epoch, loss_value, time.perf_counter() - start))
    model.eval()
    return loss_value


@torch.inference_mode()
def mean_loss(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, examples: list[Encoded], batch_size=8):
    """Cross-entropy per trained token over `examples` (the search's first objective)."""
    model.eval()
    total, tokens = 0.0, 0
    for batch in batches(examples, batch_size, tokenizer.pad_token_id, 1 << 30, random.Random(0)):
        trained = int((batch["weights"][:, 1:] > 0).sum())
        total += training_loss(model, batch).item() * trained
        tokens += trained
    return total / max(tokens, 1)


def learn(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    history: list[Conversation],
    memory: MultiLoraConfig,
    config: MiLPTrainConfig,
    on_epoch: Callable[[StageReport], None] | None = None,
) -> torch.nn.Module:
    """A MiLP memory of `history`: the LoRAs of `memory` attached to `model`, then memory injection and
    instruction tuning as `config` turns them on. `model` comes back reading as it did: the replies
    run and the search learn every memory on one loaded base model, and what reads with it afterwards
    (another method's replies, the judge) must not depend on what was learned before (in bfloat16 the
    attention kernel changes the rounding)."""
    reading = model.config._attn_implementation
    model.set_attn_implementation("eager")  # faster than sdpa for training on a CPU (benchmarks/train_speed.py)
    try:
        memorised = attach(model, memory, config.seed)
        if memorised is model:  # n = 0: nothing to learn into (the base model's own weights never train)
            return model
        if config.memory_injection:
            fit(
                memorised,
                tokenizer,
                history_examples(tokenizer, history, config),
                config.memory_epochs,
                config,
                "memory",
                on_epoch,
            )
        if config.instruction_tuning:
            examples = reply_examples(tokenizer, history, config)
            fit(memorised, tokenizer, examples, config.instruction_epochs, config, "instruction", on_epoch)
        return memorised
    finally:
        model.set_attn_implementation(reading)


@torch.inference_mode()
def replies(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    contexts: list[list[Message]],
    config: MiLPTrainConfig,
    systems: list[str] | None = None,
) -> list[str]:
    """The model's greedy replies to several dialogues so far, under the prompt it was tuned with (the
    system line of each, REPLY_SYSTEM by default). They decode as one batch: on a CPU a decoding step is
    bound by reading the weights, which a batch reads once for all its rows. In float32 each row decodes
    as it would alone; in bfloat16 the padding changes the rounding, and a near-tie can go the other way."""
    if not contexts:
        return []
    model.eval()
    systems = systems or [REPLY_SYSTEM] * len(contexts)
    prompts = [reply_prompt_ids(tokenizer, c, config, s) for c, s in zip(contexts, systems)]
    width = max(len(p) for p in prompts)
    # Left padding, masked out. The pad is the row's own first token: the repetition penalty counts
    # every token of the input, so any other pad would penalise a token the row never holds.
    ids = torch.tensor([[p[0]] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    output = model.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=config.max_new_tokens,
        do_sample=False,
        repetition_penalty=config.repetition_penalty,
        pad_token_id=tokenizer.pad_token_id,
    )
    return [tokenizer.decode(row[width:], skip_special_tokens=True).strip() for row in output]


def reply(
    model: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    context: list[Message],
    config: MiLPTrainConfig,
    system: str = REPLY_SYSTEM,
) -> str:
    """The model's greedy reply to one dialogue so far."""
    return replies(model, tokenizer, [context], config, [system])[0]


def save(model: torch.nn.Module, folder) -> None:
    """Write the memory as a peft adapter folder (nothing for n = 0)."""
    if isinstance(model, PeftModel):
        model.save_pretrained(folder)


def load(base: PreTrainedModel, folder) -> torch.nn.Module:
    """The base model with a saved MiLP memory (the base model when the folder holds none)."""

    if not (Path(folder) / "adapter_config.json").exists():
        return base
    return PeftModel.from_pretrained(base, str(folder))
