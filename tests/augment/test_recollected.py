from dataclasses import replace

from paramem.augment.recollected import notes_from_recollection
from paramem.data.notes import Fact, Notes, Topic, content_words, is_absent

# The teacher's notes the memory learned (and whose words its own notes are checked against).
LEARNED = Notes(
    "garden",
    "2 March 2026",
    [
        Topic("tomatoes on the balcony", ["growing tomatoes"]),
        Topic("a plastic pot"),
        Topic("Lisbon"),
        Topic("watering"),
    ],
    [
        Fact("The user grows tomatoes on a balcony in Lisbon."),
        Fact("The user's pot has no drainage holes."),
        Fact("The user waters the plants every morning before work."),
    ],
    [],
)
RECOLLECTION = "\n".join(
    [
        "On 2 March 2026 we talked about tomatoes on the balcony, a plastic pot and Lisbon. "
        "The user grows tomatoes on a balcony in Lisbon. The user's pot has no drainage holes.",
        "On 2 March 2026 we talked about tomatoes on the balcony and watering. "
        "The user grows tomatoes on a balcony in Lisbon.",
        "The user waters the plants every morning before work.",  # a branch that left the trained shape
        "",
    ]
)


def test_the_recollection_becomes_notes_in_the_teachers_shape():
    notes = notes_from_recollection(LEARNED, RECOLLECTION)
    assert (notes.conversation_id, notes.date, notes.written_by) == ("garden", "2 March 2026", "memory")
    # recalled by both branches first, then in order of first appearance
    assert [t.name for t in notes.topics] == ["tomatoes on the balcony", "a plastic pot", "Lisbon", "watering"]
    assert [f.statement for f in notes.facts] == [
        "The user grows tomatoes on a balcony in Lisbon.",
        "The user's pot has no drainage holes.",
        "The user waters the plants every morning before work.",
    ]
    assert notes.facts[1].paraphrases == ["Your pot has no drainage holes."]


def test_its_near_misses_are_absent_from_what_was_recalled_and_balance_the_facts():
    notes = notes_from_recollection(LEARNED, RECOLLECTION)
    recalled = content_words(RECOLLECTION)
    assert notes.negatives and all(is_absent(t.name, recalled) for t in notes.negatives)
    assert len(notes.false_facts) == len(notes.facts)
    assert all(is_absent(f.statement, recalled) for f in notes.false_facts)
    assert notes_from_recollection(LEARNED, RECOLLECTION) == notes  # the same draw every time


def test_what_the_memory_was_not_taught_or_says_twice_is_not_kept():
    recalled = "\n".join(
        [
            "On 2 March 2026 we talked about watering watering, a job offer in Munich and tomatoes on the balcony. "
            "The user's new puppy is a golden retriever. The user's pot has no drainage holes.",
            "On 2 March 2026 we talked about tomatoes on the balcony. The user's pot has no drainage holes at all.",
        ]
    )
    notes = notes_from_recollection(LEARNED, recalled)
    assert [t.name for t in notes.topics] == ["tomatoes on the balcony", "watering"]  # stutter undone
    assert [f.statement for f in notes.facts] == ["The user's pot has no drainage holes."]


def test_near_misses_are_absent_from_what_the_memory_was_taught():
    taught = content_words(" ".join(w for item in (*LEARNED.topics, *LEARNED.facts) for w in item.wordings))
    notes = notes_from_recollection(LEARNED, "")
    assert all(is_absent(t.name, taught) for t in notes.negatives)


def test_nothing_recalled_gives_notes_with_nothing_to_replay():
    notes = notes_from_recollection(LEARNED, "\n\n")
    assert notes.topics == [] and notes.facts == [] and notes.false_facts == []
    assert Notes.from_dict(notes.to_dict()) == notes  # stored and read back as the teacher's are


def test_a_kept_conversations_memory_notes_lose_what_resembles_a_forgotten_one():
    from paramem.augment.recollected import without_what_resembles

    offer = "The user got a job offer in Munich."
    gone = Notes("interview", "9 March 2026", [Topic("a job offer in Munich")], [Fact(offer)], [])
    # the garden chat mentioned the offer too, and the memory recalled it there; forgetting the
    # interview must not leave it to be relearned from the garden's notes
    recalled = f"{RECOLLECTION}\nOn 2 March 2026 we talked about a job offer in Munich. {offer}"
    taught_the_offer = replace(LEARNED, topics=[*LEARNED.topics, *gone.topics], facts=[*LEARNED.facts, *gone.facts])
    kept = notes_from_recollection(taught_the_offer, recalled)
    assert "a job offer in Munich" in [t.name for t in kept.topics]
    cleaned = without_what_resembles(kept, gone)
    assert [t.name for t in cleaned.topics] == [t.name for t in kept.topics if t.name != "a job offer in Munich"]
    assert [f.statement for f in cleaned.facts] == [f.statement for f in kept.facts if f.statement != offer]
    teachers = Notes("garden", None, [Topic("a job offer in Munich")], [], [])
    assert without_what_resembles(teachers, gone) == teachers  # the teacher's come from their own text


def test_the_words_of_the_teachers_fallback_forms_support_nothing():
    from paramem.augment.teachers.extractive import fallback_paraphrases

    learned = Notes("garden", "2 March 2026", [Topic("tomatoes", fallback_paraphrases("tomatoes"))], [], [])
    assert any("topic" in w for w in learned.topics[0].wordings)  # "the topic of tomatoes"
    recalled = "On 2 March 2026 we talked about the topic of the topic, various topics and tomatoes."
    assert [t.name for t in notes_from_recollection(learned, recalled).topics] == ["tomatoes"]
