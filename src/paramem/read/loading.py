"""Loading a user's memory: the base model with their adapter or cartridges, at a version kept on
disk while it loads."""

from __future__ import annotations

from peft import PeftModel
from safetensors import SafetensorError

from paramem.config import Form
from paramem.memory.cartridge import INDEX, CartridgeModel
from paramem.model.loading import load_model
from paramem.store.user import UserMemory


def load_memory(user: str, home=None, dtype: str | None = None):
    """(model with the user's adapter or cartridges, tokenizer, UserMemory); `InputError` for an unknown user or a
    damaged adapter. The base model loads in `dtype`, else $PARAMEM_DTYPE, else the dtype the memory
    was learned in. The adapter version read is kept on disk while it loads (`UserMemory.reading`)."""
    memory = UserMemory(user, home).require()
    settings = memory.settings()
    base, tokenizer = load_model(settings["base_model"], dtype, settings.get("dtype"))
    cartridges = memory.form == Form.CARTRIDGE
    with memory.reading() as adapter:
        try:
            if cartridges:
                model = CartridgeModel.from_pretrained(base, tokenizer, adapter)
            else:
                model = PeftModel.from_pretrained(base, str(adapter))
        except (OSError, ValueError, RuntimeError, KeyError, SafetensorError) as error:
            raise memory.damaged(adapter / (INDEX if cartridges else "adapter_model.safetensors"), error) from None
        memory.loaded_version = int(adapter.name)
    model.eval()
    return model, tokenizer, memory
