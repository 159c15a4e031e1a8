from paramem.augment.recollected import notes_from_recollection
from paramem.data.notes import Notes, content_words, is_absent

LEARNED = Notes("garden", "2 March 2026", [], [], [])
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


def test_nothing_recalled_gives_notes_with_nothing_to_replay():
    notes = notes_from_recollection(LEARNED, "\n\n")
    assert notes.topics == [] and notes.facts == [] and notes.false_facts == []
    assert Notes.from_dict(notes.to_dict()) == notes  # stored and read back as the teacher's are


def test_a_kept_conversations_memory_notes_lose_what_resembles_a_forgotten_one():
    from paramem.augment.recollected import without_what_resembles
    from paramem.data.notes import Fact, Topic

    offer = "The user got a job offer in Munich."
    gone = Notes("interview", "9 March 2026", [Topic("a job offer in Munich")], [Fact(offer)], [])
    # the memory recalled the interview under the garden's date too
    recalled = f"{RECOLLECTION}\nOn 2 March 2026 we talked about a job offer in Munich. {offer}"
    kept = notes_from_recollection(LEARNED, recalled)
    assert "a job offer in Munich" in [t.name for t in kept.topics]
    cleaned = without_what_resembles(kept, gone)
    assert [t.name for t in cleaned.topics] == [t.name for t in kept.topics if t.name != "a job offer in Munich"]
    assert [f.statement for f in cleaned.facts] == [f.statement for f in kept.facts if f.statement != offer]
    teachers = Notes("garden", None, [Topic("a job offer in Munich")], [], [])
    assert without_what_resembles(teachers, gone) == teachers  # the teacher's come from their own text
