"""UeLP's user embedding (a baseline of `paramem replies`): a soft prompt, peft prompt tuning,
learned from a user's history."""

from __future__ import annotations

import random

import torch
from peft import PromptTuningConfig, get_peft_model

from paramem.config import MiLPTrainConfig
from paramem.data.conversations import Conversation
from paramem.memory.batching import batches, loss_at_weights
from paramem.memory.milp.model import reply_examples
from paramem.model.loading import decoder_and_head


def learn_soft_prompt(
    model, tokenizer, history: list[Conversation], train: MiLPTrainConfig, tokens: int, learning_rate: float
):
    """UeLP's user embedding: a soft prompt before every input, learned on the history's replies
    (the base model frozen)."""
    torch.manual_seed(train.seed)
    prompted = get_peft_model(model, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=tokens))
    examples = reply_examples(tokenizer, history, train)
    trainable = [p for p in prompted.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=learning_rate)
    rng = random.Random(train.seed)
    prompted.train()
    epochs = train.memory_epochs + train.instruction_epochs
    for _ in range(epochs):
        for batch in batches(examples, train.batch_size, tokenizer.pad_token_id, train.max_length, rng):
            loss = soft_prompt_loss(prompted, batch)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    prompted.eval()
    return prompted


def soft_prompt_loss(prompted, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """`train.training_loss` through a soft prompt: its virtual tokens' embeddings go before the input's,
    and the vocabulary head runs only where the loss has weight (peft's own forward would make the
    full [batch x length x vocabulary] logits, a third of the compute at this model size)."""

    decoder, head = decoder_and_head(prompted)
    embeds = decoder.get_input_embeddings()(batch["input_ids"])
    prompt = prompted.get_prompt(batch_size=embeds.shape[0]).to(embeds.dtype)
    virtual = prompt.shape[1]
    mask = torch.cat([batch["attention_mask"].new_ones(embeds.shape[0], virtual), batch["attention_mask"]], dim=1)
    hidden = decoder(inputs_embeds=torch.cat([prompt, embeds], dim=1), attention_mask=mask).last_hidden_state
    return loss_at_weights(head, hidden[:, virtual:], batch)
