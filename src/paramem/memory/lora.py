"""The LoRA adapter of a sequential memory: which linears it wraps, and attaching it to a model."""

from __future__ import annotations

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import PreTrainedModel

from paramem.config import TrainConfig
from paramem.model.loading import decoder_and_head


def linear_module_names(model: torch.nn.Module) -> list[str]:
    """Short names of the linear layers inside the transformer blocks ("q_proj", ..., not the head)."""
    _, head = decoder_and_head(model)
    return sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and module is not head
        }
    )


def attach_lora(model: PreTrainedModel, config: TrainConfig, adapter: str | None = None) -> PeftModel:
    """Wrap the base model with a fresh LoRA, or with a saved adapter to continue learning."""
    model.set_attn_implementation(config.attention)
    if adapter is not None:
        return PeftModel.from_pretrained(
            model, adapter, is_trainable=True, autocast_adapter_dtype=config.adapter_float32
        )
    torch.manual_seed(config.seed)  # LoRA's A matrices start the same whatever ran before in this process
    return get_peft_model(model, lora_config(config, model), autocast_adapter_dtype=config.adapter_float32)


def lora_config(config: TrainConfig, model: torch.nn.Module | None = None) -> LoraConfig:
    """peft's LoraConfig for these settings; a layer choice needs the model to name its linears."""
    targets = config.target_modules
    if config.layers is not None and targets == "all-linear":
        # peft accepts a layer choice only with explicit module names
        if model is None:
            raise ValueError("naming the linear modules of chosen layers needs the model")
        targets = linear_module_names(model)
    return LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=targets,
        layers_to_transform=config.layers,
        task_type="CAUSAL_LM",
    )
