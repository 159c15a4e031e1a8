from paramem.augment.templates import fact_clause


def test_a_stated_fact_becomes_the_clause_of_a_question():
    assert (
        fact_clause("The support group made Caroline feel accepted.") == "the support group made Caroline feel accepted"
    )
    assert fact_clause("Caroline paints sunsets.") == "Caroline paints sunsets"
    assert fact_clause("She adopted a dog") == "she adopted a dog"
