"""Questions asking whether something was said, asked of the passages instead (read/said.py)."""

import pytest

from paramem.read.said import asked_of_the_excerpts, excerpt_question, third_person


@pytest.mark.parametrize(
    ("question", "asked"),
    [
        ("Did we talk about my rescue cat?", "Do the excerpts mention the user's rescue cat?"),
        ("Have I mentioned pain in my knee to you?", "Do the excerpts mention pain in the user's knee?"),
        ("Do you remember that I own a Jeep?", "Do the excerpts mention that the user owns a Jeep?"),
        ("Did I tell you that I'm moving?", "Do the excerpts mention that the user is moving?"),
        ("Have we practised SQL queries together?", "Do the excerpts mention SQL queries?"),
        ("Did we discuss drainage holes in flower pots?", "Do the excerpts mention drainage holes in flower pots?"),
    ],
)
def test_a_question_about_what_was_said_is_asked_of_the_excerpts_in_their_words(question, asked):
    assert asked_of_the_excerpts(question) == asked


@pytest.mark.parametrize(
    "question",
    [
        "Did we talk about the fact that Caroline adopted a dog?",  # a claim about someone named
        "Do you remember that Melanie paints?",
        "Did we discuss that?",  # the content-free question the prior rule reads
        "Did my tomato seedlings get yellow leaves?",  # not about what was said
        "What did I plant?",
    ],
)
def test_other_questions_are_read_as_asked(question):
    assert asked_of_the_excerpts(question) is None


def test_a_claim_about_someone_else_still_has_an_excerpt_question():
    # the benchmark's "mention" rule reads every said question this way; the path does not
    asked = excerpt_question("Did we talk about the fact that Caroline adopted a dog?")
    assert asked == "Do the excerpts mention the fact that Caroline adopted a dog?"


@pytest.mark.parametrize(
    ("question", "asked"),
    [
        ("Did I tell you that I really love hiking?", "Do the excerpts mention that the user really loves hiking?"),
        ("Did I tell you that I watch TV at night?", "Do the excerpts mention that the user watches TV at night?"),
        ("Did I tell you that I don't like cats?", "Do the excerpts mention that the user doesn't like cats?"),
        ("Did I tell you that I have two dogs?", "Do the excerpts mention that the user has two dogs?"),
        ("Did I tell you that I am a nurse?", "Do the excerpts mention that the user is a nurse?"),
        # a past tense, a modal and a subject of two keep their verbs
        ("Did I tell you that I went to Paris?", "Do the excerpts mention that the user went to Paris?"),
        ("Did I tell you that I can swim?", "Do the excerpts mention that the user can swim?"),
        (
            "Did I tell you that my wife and I travel?",
            "Do the excerpts mention that the user's wife and the user travel?",
        ),
    ],
)
def test_the_users_verb_agrees_with_the_user(question, asked):
    assert excerpt_question(question) == asked


@pytest.mark.parametrize(
    ("word", "as_the_users"),
    [("own", "owns"), ("try", "tries"), ("do", "does"), ("adopted", "adopted"), ("must", "must"), ("happy", "happy")],
)
def test_third_person_inflects_only_a_verbs_base_form(word, as_the_users):
    assert third_person(word) == as_the_users
