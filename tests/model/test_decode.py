import torch

from paramem.model.decode import decode_after_prefix, end_token_ids, repeated, rows_that_fit
from paramem.model.loading import tiny_model

PREFIX = list(range(5, 40))
RESTS = [[50, 51], [60, 61, 62, 63, 64, 65, 66], [70]]  # of different lengths: the shorter rows are padded


def alone(model, prompt: list[int], steps: int) -> list[int]:
    ids = torch.tensor([prompt])
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=steps, do_sample=False)
    return out[0, len(prompt) :].tolist()


def prefix_cache(model, prefix: list[int]):
    with torch.inference_mode():
        return model(input_ids=torch.tensor([prefix]), use_cache=True).past_key_values


def test_rows_decoded_together_after_a_cached_prefix_are_what_each_prompt_generates_alone():
    model, tokenizer = tiny_model()
    rows = decode_after_prefix(model, prefix_cache(model, PREFIX), len(PREFIX), RESTS, 6, set(), 0, top_k=3)
    for rest, row in zip(RESTS, rows):
        assert row.ids == alone(model, PREFIX + rest, 6)
        assert row.ids == [ids[0] for ids in row.top_ids]  # greedy
        assert all(len(ids) == 3 for ids in row.top_ids)


def test_without_a_prefix_the_rows_are_padded_from_the_start():
    model, _ = tiny_model()
    rows = decode_after_prefix(model, None, 0, RESTS, 4, set(), 0)
    assert [row.ids for row in rows] == [alone(model, rest, 4) for rest in RESTS]


def test_a_row_stops_at_its_end_token_and_keeps_it():
    model, _ = tiny_model()
    cache = prefix_cache(model, PREFIX)
    free = decode_after_prefix(model, cache, len(PREFIX), RESTS, 6, set(), 0)
    end = free[1].ids[2]  # the third token the second row writes
    stopped = decode_after_prefix(model, cache, len(PREFIX), RESTS, 6, {end}, 0)
    assert stopped[1].ids == free[1].ids[: free[1].ids.index(end) + 1]
    for before, after in zip(free, stopped):  # the others stop at it too, wherever they write it
        assert after.ids == (before.ids[: before.ids.index(end) + 1] if end in before.ids else before.ids)


def test_sampled_rows_are_reproducible_from_the_generators_seed():
    model, _ = tiny_model()
    cache = prefix_cache(model, PREFIX)

    def draw(seed: int) -> list[list[int]]:
        sampler = torch.Generator().manual_seed(seed)
        return [row.ids for row in decode_after_prefix(model, cache, len(PREFIX), RESTS, 8, set(), 0, sampler=sampler)]

    assert draw(3) == draw(3)
    assert draw(3) != draw(4)


def test_the_prefix_cache_is_left_as_it_was_for_the_next_batch():
    model, _ = tiny_model()
    cache = prefix_cache(model, PREFIX)
    keys = cache.layers[0].keys.clone()
    copies = repeated(cache, 4)
    assert copies.layers[0].keys.shape[0] == 4 and torch.equal(cache.layers[0].keys, keys)
    decode_after_prefix(model, cache, len(PREFIX), RESTS, 3, set(), 0)
    assert torch.equal(cache.layers[0].keys, keys) and cache.get_seq_length() == len(PREFIX)


def test_rows_are_bounded_by_the_bytes_their_copies_of_the_prefix_take():
    model, _ = tiny_model()
    cache = prefix_cache(model, PREFIX)
    size = sum(t.nbytes for layer in cache.layers for t in (layer.keys, layer.values))
    assert rows_that_fit(cache, 3 * size) == 3
    assert rows_that_fit(cache, size // 2) == 1  # always one
    assert rows_that_fit(cache, 100 * size, most=16) == 16
    assert rows_that_fit(None, 0, most=16) == 16


def test_end_tokens_are_the_tokenizers_end_of_text_and_the_templates_end_of_turn():
    _, tokenizer = tiny_model()
    ends = end_token_ids(tokenizer)
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in ends and tokenizer.unk_token_id not in ends
