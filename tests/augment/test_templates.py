from paramem.augment.templates import fact_clause


def test_a_stated_fact_becomes_the_clause_of_a_question():
    assert (
        fact_clause("The support group made Caroline feel accepted.") == "the support group made Caroline feel accepted"
    )
    assert fact_clause("Caroline paints sunsets.") == "Caroline paints sunsets"
    assert fact_clause("She adopted a dog") == "she adopted a dog"


def test_answers_in_a_training_template_are_told_from_answers_in_words():
    from paramem.augment.templates import in_training_template

    for templated in (
        "We talked about the kind of pot on 28 March 2026. The user is trying to grow tomatoes",
        "On 2 March 2026 we talked about tomatoes.",
        "Yes, we talked about the marathon.",
        "No, the marathon never came up.",
        "Tomatoes came up in one of our conversations.",
    ):
        assert in_training_template(templated), templated
    for answered in ("A plastic pot without drainage holes.", "Caroline researched adoption agencies.", "7 May 2023"):
        assert not in_training_template(answered), answered
