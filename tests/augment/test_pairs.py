from paramem.augment import templates as T
from paramem.augment.pairs import PairConfig, training_pairs, validation_pairs
from paramem.data.notes import Fact, Notes, Topic


def notes():
    return Notes(
        "c1",
        "2 March 2026",
        topics=[
            Topic("a trip to Kyoto", ["travelling to Japan", "a holiday in Kyoto"]),
            Topic("cherry blossoms", ["sakura season", "flowering cherry trees"]),
        ],
        facts=[Fact("The user flies to Kyoto in April.", ["In April the user travels to Kyoto."])],
        negatives=[
            Topic("a trip to Seoul", ["travelling to Korea", "a holiday in Seoul"]),
            Topic("autumn leaves", ["fall foliage", "autumn colours"]),
            Topic("a sushi bar", ["raw fish", "a sushi restaurant"]),
        ],
        false_facts=[Fact("The user flies to Osaka in October.")],
    )


def closed(pairs):
    return [p for p in pairs if p.kind == "closed"]


def test_positives_and_negatives_are_balanced_one_to_one():
    pairs = closed(training_pairs(notes(), 1, PairConfig()))
    yes = sum(p.label == "yes" for p in pairs)
    assert yes > 0 and yes == sum(p.label == "no" for p in pairs)


def test_ratio_is_configurable():
    pairs = closed(training_pairs(notes(), 1, PairConfig(negative_ratio=1.25)))
    yes, no = sum(p.label == "yes" for p in pairs), sum(p.label == "no" for p in pairs)
    assert no == round(1.25 * yes)


def test_templates_are_redrawn_each_epoch():
    one = {p.question for p in training_pairs(notes(), 1, PairConfig())}
    two = {p.question for p in training_pairs(notes(), 2, PairConfig())}
    assert one != two
    assert training_pairs(notes(), 1, PairConfig()) == training_pairs(notes(), 1, PairConfig())


def test_no_duplicates():
    pairs = training_pairs(notes(), 3, PairConfig(questions_per_wording=3))
    keys = [(p.question.lower(), p.answer.lower(), p.kind) for p in pairs]
    assert len(keys) == len(set(keys))


def test_validation_is_held_out_by_wording_and_template():
    heldout = validation_pairs(notes())
    assert {p.label for p in heldout} == {"yes", "no"}
    assert sum(p.label == "yes" for p in heldout) == sum(p.label == "no" for p in heldout)
    trained = [p for epoch in range(1, 11) for p in training_pairs(notes(), epoch, PairConfig())]
    trained_text = " ".join(p.question + " " + p.answer for p in trained)
    topic_wordings = ["a holiday in Kyoto", "flowering cherry trees", "a holiday in Seoul", "autumn colours"]
    topic_wordings.append("a sushi restaurant")
    fact_clauses = ["in April the user travels to Kyoto", "the user flies to Osaka in October"]
    for pair in heldout:
        assert pair.question not in {p.question for p in trained}
        topic_shaped = [t.format(t=w) for t in T.HELDOUT_TOPIC_QUESTIONS for w in topic_wordings]
        fact_shaped = [t.format(f=c) for t in T.HELDOUT_FACT_QUESTIONS for c in fact_clauses]
        assert pair.question in topic_shaped + fact_shaped
    assert "flowering cherry trees" not in trained_text


def test_validation_is_balanced_within_each_shape():
    """LoCoMo's probes are fact-shaped, so held-out pairs ask facts too; neither shape is one-sided."""
    heldout = validation_pairs(notes())
    facts = [p for p in heldout if p.question.startswith(tuple(t.split("{")[0] for t in T.HELDOUT_FACT_QUESTIONS))]
    assert [p.label for p in facts].count("yes") == [p.label for p in facts].count("no") == 1
    topics = [p for p in heldout if p not in facts]
    assert [p.label for p in topics].count("yes") == [p.label for p in topics].count("no") == 2


def test_heldout_wordings_are_never_a_fallback_form_when_another_exists():
    """A local teacher paraphrases its topics but falls back on "anything about <word>" for the
    negatives it draws; held out, that form alone would say "no"."""
    from paramem.augment.teachers.extractive import fallback_paraphrases

    drawn = Notes(
        "c2",
        "2 March 2026",
        topics=[Topic("tomato seeds", ["tomatoes", "seeds of tomatoes"]), Topic("compost", ["composting"])],
        facts=[],
        negatives=[Topic(p, fallback_paraphrases(p)) for p in ("a new mattress", "a vaccine appointment")],
    )
    heldout = validation_pairs(drawn)
    assert len(heldout) == 4
    for pair in heldout:
        assert "anything about" not in pair.question and "the topic of" not in pair.question, pair.question
    trained = {p.question for epoch in range(1, 11) for p in training_pairs(drawn, epoch, PairConfig())}
    assert any("anything about mattress" in q for q in trained)  # still trained, only never held out


def test_open_answers_restate_content_and_statements_carry_the_date():
    pairs = training_pairs(notes(), 1, PairConfig())
    open_answers = [p.answer for p in pairs if p.kind == "open"]
    assert any("Kyoto" in a and "April" in a for a in open_answers)
    assert any("2 March 2026" in p.answer for p in pairs if p.kind == "statement")
    assert any(
        p.answer.startswith("On 2 March 2026 we talked about a trip to Kyoto and cherry blossoms.")
        and "April" in p.answer
        for p in pairs
        if p.kind == "statement"
    )
    assert not [
        p
        for p in training_pairs(notes(), 1, PairConfig(open_questions=False, statements=False, recall=False))
        if p.kind != "closed"
    ]


def test_a_cap_on_pairs_keeps_each_kind_in_proportion():
    full = training_pairs(notes(), 1, PairConfig(questions_per_wording=3))
    capped = training_pairs(notes(), 1, PairConfig(questions_per_wording=3, max_pairs=10))
    assert len(full) > 10 and len(capped) == 10
    assert set(capped) <= set(full)
    yes, no = sum(p.label == "yes" for p in capped), sum(p.label == "no" for p in capped)
    assert yes > 0 and abs(yes - no) <= 1
    for kind in ("open", "statement"):
        share = sum(p.kind == kind for p in full) / len(full)
        assert abs(sum(p.kind == kind for p in capped) - share * 10) <= 1
