import json

import pytest
import torch
from conftest import DEMO

from paramem.augment.pairs import PairConfig, recall_question, summary, training_pairs
from paramem.augment.teachers.extractive import ExtractiveTeacher
from paramem.config import RememberConfig, TrainConfig
from paramem.data.notes import Fact, Notes, Topic
from paramem.evaluate.probes import load_probes
from paramem.evaluate.run import evaluate_yes_no
from paramem.lifecycle.remember import remember
from paramem.memory.lora import attach_lora
from paramem.model.loading import tiny_model
from paramem.read.loading import load_memory
from paramem.read.recall import Cue, RecallConfig, SentenceMatcher, recall_cues, recollect, recollections, sentences

SHORT = RecallConfig(max_new_tokens=4, branches=2)


def notes(date="2 March 2026"):
    return Notes(
        "garden",
        date,
        topics=[Topic("tomato seedlings", ["tomato plants"])],
        facts=[Fact("The user's seedlings on the balcony have yellow leaves.")],
        negatives=[Topic("roses", ["rose bushes"])],
    )


def test_the_recall_cue_names_the_date_or_the_id_never_the_content():
    assert recall_question(notes()) == "What did we talk about on 2 March 2026?"
    assert recall_question(notes(date=None)) == "What did we talk about in our conversation 'garden'?"
    assert recall_cues([notes(), notes(date=None)]) == [
        Cue(recall_question(notes()), "On 2 March 2026 we talked about"),
        Cue(recall_question(notes(None)), "Once we talked about"),
    ]


def test_each_epoch_trains_the_cue_to_recall_the_whole_conversation():
    [pair] = [p for p in training_pairs(notes(), 1, PairConfig()) if p.kind == "recall"]
    assert pair.question == recall_question(notes()) and pair.answer == summary(notes())
    assert pair.answer.startswith(recall_cues([notes()])[0].opening + " tomato seedlings")
    assert "tomato seedlings" in pair.answer and "yellow leaves" in pair.answer
    without = training_pairs(notes(), 1, PairConfig(recall=False))
    assert not [p for p in without if p.kind == "recall"]
    assert any(p.question.endswith("2 March 2026?") for p in without if p.kind == "open")  # the date question is back


def test_sentences_are_split_and_deduplicated():
    assert sentences(["We talked about tomatoes. You water them daily!", "We talked about tomatoes.  ", ""]) == [
        "We talked about tomatoes.",
        "You water them daily!",
    ]
    # Recall branches are joined by new lines; a branch cut mid-sentence stays apart from the next.
    assert sentences(["On 2 March we talked about pots. The\nOn 2 March we talked about seeds."]) == [
        "On 2 March we talked about pots.",
        "The",
        "On 2 March we talked about seeds.",
    ]


def test_a_question_about_something_recalled_scores_above_one_that_is_not():
    matcher = SentenceMatcher(
        [
            "On 2 March we talked about tomato seedlings on your balcony.",
            "You will buy terracotta pots with drainage holes.",
        ],
        threshold=0.4,
    )
    near, far = matcher.scores(["Did we talk about the plants on my balcony?", "Did we discuss my car insurance?"])
    assert near > 0 > far
    assert SentenceMatcher([], threshold=0.4).scores(["anything?"]) == [-0.4]  # nothing recalled: never yes


def test_each_cue_recalls_one_branch_per_likeliest_first_word_batched_or_not():
    model, tokenizer = tiny_model()
    cues = [
        Cue("What did we talk about on 2 March 2026?", "On 2 March 2026 we talked about"),
        Cue("What did we talk about in our conversation 'a-much-longer-id'?", "Once we talked about"),
    ]
    config = RecallConfig(max_new_tokens=4, branches=3, batch_size=4)
    batched = recollect(model, tokenizer, cues, config)
    alone = [
        recollect(model, tokenizer, [cue], RecallConfig(max_new_tokens=4, branches=3, batch_size=1))[0] for cue in cues
    ]
    assert batched == alone and len(batched) == 2
    half = model.to(torch.bfloat16)
    recollect(half, tokenizer, cues[:1], config)  # decoded in float32, then every dtype restored
    assert {p.dtype for p in half.parameters()} == {torch.bfloat16}
    for cue, text in zip(cues, batched):
        branches = text.split("\n")
        assert len(branches) == 3 and all(b.startswith(cue.opening) for b in branches)
        assert len(set(branches)) == 3  # each branch starts from a different next token


def test_recollections_are_cached_per_adapter_version(demo_conversations):
    config = RememberConfig(base_model="tiny", train=TrainConfig(epochs=1, min_epochs=1))
    remember("u", demo_conversations[:1], ExtractiveTeacher(), config)
    model, tokenizer, memory = load_memory("u")
    first = recollections(model, tokenizer, memory, SHORT)
    cache = memory.current_adapter() / "recall.json"
    assert len(first) == 1 and cache.exists()
    saved = json.loads(cache.read_text())
    cache.write_text(json.dumps({**saved, "recollections": ["edited"]}))
    assert recollections(model, tokenizer, memory, SHORT) == ["edited"]  # read back, not generated again
    remember("u", demo_conversations[:2], ExtractiveTeacher(), config)  # a new version: a new cache
    model, tokenizer, memory = load_memory("u")
    again = recollections(model, tokenizer, memory, SHORT)
    assert len(again) == 2 and "edited" not in again


def test_the_recall_readout_reads_none_memory_and_context_alike(demo_conversations):
    model, tokenizer = tiny_model()
    model = attach_lora(model, TrainConfig())
    probes = load_probes(DEMO / "probes.jsonl")[:6]
    cues = recall_cues([notes()])
    results = evaluate_yes_no(
        model,
        tokenizer,
        probes,
        ["none", "memory", "context"],
        demo_conversations,
        readout="recall",
        cues=cues,
        recall=SHORT,
    )
    by_method = {r.method: r for r in results}
    assert all(r.readout == "recall" and r.metrics["raw"].n == 6 for r in results)
    assert all(set(r.metrics) == {"prior", "raw"} for r in results)  # no held-out pairs given
    assert len(by_method["memory"].recollections) == 1 and by_method["context"].recollections is None
    # The context method matches the raw conversations: the garden probes about the balcony score high.
    assert by_method["context"].predictions[0]["score"] > by_method["context"].predictions[4]["score"]
    assert by_method["memory"].to_dict()["recollections"] == by_method["memory"].recollections
    with pytest.raises(ValueError, match="recall readout reads"):
        evaluate_yes_no(model, tokenizer, probes, ["bm25"], demo_conversations, readout="recall", cues=cues)
    with pytest.raises(ValueError, match="one cue per learned conversation"):
        evaluate_yes_no(model, tokenizer, probes, ["memory"], readout="recall")
