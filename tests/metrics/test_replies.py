import pytest

from paramem.metrics.replies import mean_scores, persona_f1, persona_words, rouge, score_reply


def test_persona_f1_is_unigram_f1_without_stop_words():
    # reply words {love, bees} (i, the: stop words), fact words {farm, bees}: P = R = 1/2
    assert persona_f1("I love the bees", ["I farm bees."]) == pytest.approx(0.5)
    assert persona_f1("Nothing shared here", ["I farm bees."]) == 0.0
    assert persona_f1("bees farm", ["I farm bees."]) == pytest.approx(1.0)


def test_persona_words_handle_any_script():
    assert persona_words("Ich mag Bären und Honig") >= {"bären", "honig"}
    assert persona_words("Я люблю мёд") == {"я", "люблю", "мёд"}


def test_rouge_matches_rouge_score_definitions():
    r1, rl = rouge("the cat sat", "a cat sat down")
    assert r1 == pytest.approx(2 * (2 / 3) * (2 / 4) / (2 / 3 + 2 / 4))  # 2 shared of 3 and 4 unigrams
    assert rl == pytest.approx(r1)  # the shared words are in order
    assert rouge("down sat cat", "cat sat down")[1] < rouge("cat sat down", "cat sat down")[1] == 1.0


def test_mean_scores_skip_missing_partner_figures():
    scores = [score_reply("bees", "bees", ["bees"], ["bees"]), score_reply("no", "bees", ["bees"])]
    means = mean_scores(scores)
    assert means["rouge1"] == pytest.approx(0.5) and means["partner_persona_f1"] == pytest.approx(1.0)
