import pytest

from paramem.read.retrieval import (
    RRF_K,
    BM25Retriever,
    DenseRetriever,
    FusedRetriever,
    Passage,
    make_retriever,
    passages,
    retrieval_prompt,
)


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


def test_fused_retrieval_ranks_a_planted_turn_first_on_a_toy_store(demo_conversations):
    planted = Passage("toy", "[2026-04-01] user: On the balcony I planted basil and chillies in two pots.")
    store = [*passages(demo_conversations), planted]
    assert make_retriever("fused", store).search(["Which herbs did I plant in pots on my balcony?"], k=1) == [[planted]]


class Ranked:
    def __init__(self, order):
        self.order = order

    def search(self, queries, k):
        return [self.order[:k] for _ in queries]


def test_reciprocal_rank_fusion_puts_what_both_find_before_what_one_finds_first():
    a, b, c, d = (Passage("x", t) for t in "abcd")
    # a: first for one, absent for the other; c: second and third, so 1/(K+2) + 1/(K+3) > 1/(K+1)
    fused = FusedRetriever([a, b, c, d], parts=[Ranked([a, c, d]), Ranked([b, d, c])])
    assert fused.search(["q"], k=4) == [[c, d, a, b]]
    assert 1 / (RRF_K + 2) + 1 / (RRF_K + 3) > 1 / (RRF_K + 1)
    assert fused.search(["q", "r"], k=1) == [[c], [c]]  # one list per question


def test_note_passages_are_the_teachers_facts_dated():
    from paramem.data.notes import Fact, Notes
    from paramem.read.retrieval import note_passages

    notes = [Notes("garden", "2 March 2026", [], [Fact("The user's pots have no drainage holes.")], [])]
    [passage] = note_passages(notes)
    assert passage == Passage("garden", "[2 March 2026] The user's pots have no drainage holes.", "2 March 2026")
    [[found]] = FusedRetriever(note_passages(notes)).search(["drainage holes"], k=1)
    assert found.conversation == "garden"
