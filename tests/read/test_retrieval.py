import pytest

from paramem.read.retrieval import BM25Retriever, DenseRetriever, passages, retrieval_prompt


def test_turn_passages_are_dated_and_attributed(demo_conversations):
    found = passages(demo_conversations[:1])
    assert len(found) == len(demo_conversations[0].messages)
    assert found[0].text.startswith("[2026-03-02] user: My tomato seedlings")
    assert len(passages(demo_conversations, unit="session")) == len(demo_conversations)


def test_bm25_finds_the_turn_that_shares_the_words(demo_conversations):
    retriever = BM25Retriever(passages(demo_conversations))
    [[best, *_]] = retriever.search(["tomato seedlings with yellow leaves"], k=3)
    assert best.conversation == "garden" and "seedlings" in best.text
    assert retriever.search([], k=3) == []  # no questions, no search (bm25s refuses an empty batch)


def test_dense_finds_the_turn_by_meaning(demo_conversations):
    retriever = DenseRetriever(passages(demo_conversations, unit="session"))
    [[best]] = retriever.search(["problems with my vegetable plants on the terrace"], k=1)
    assert best.conversation == "garden"


def test_retrieval_prompt_lists_the_excerpts(demo_conversations):
    prompt = retrieval_prompt(passages(demo_conversations[:1])[:2])
    assert prompt.count("\n- ") == 2


def test_unknown_unit_is_refused(demo_conversations):
    with pytest.raises(ValueError):
        passages(demo_conversations, unit="paragraph")
