import csv

from conftest import DATA, FIXTURES, needs_data

from paramem.evaluate.capability import choice_accuracy, load_arc, load_mmlu
from paramem.model.loading import tiny_model


def test_mmlu_items_are_five_shot_from_the_subjects_dev_split():
    [first, second] = load_mmlu(FIXTURES / "mmlu", per_subject=2, subjects=3)
    assert (first.group, first.answer, second.answer) == ("elementary_arithmetic", "C", "B")
    assert first.prompt.count("\nAnswer: ") == 5 and first.prompt.endswith(
        "What is 7 x 6?\nA. 36\nB. 48\nC. 42\nD. 40\nAnswer:"
    )


@needs_data
def test_mmlu_subset_is_spread_over_subjects():
    items = load_mmlu(DATA / "mmlu", per_subject=2, subjects=3)
    assert len(items) == 6 and len({i.group for i in items}) == 3
    assert all(i.answer in "ABCD" for i in items)


@needs_data
def test_full_mmlu_reads_every_test_row_despite_quoted_newlines():
    counts = {
        row["subject"]: int(row["test"])  # the file ends with a total row
        for row in csv.DictReader(open(DATA / "mmlu" / "counts.tsv"), delimiter="\t")
        if row["subject"] != "TOTAL"
    }
    items = load_mmlu(DATA / "mmlu", per_subject=None, subjects=None)
    assert len(items) == sum(counts.values()) == 14042


@needs_data
def test_arc_labels_become_letters():
    items = load_arc(DATA / "arc" / "ARC-Challenge", limit=None)
    assert len(items) > 1100 and {i.answer for i in items} <= set("ABCD")


def test_choice_accuracy_is_the_share_of_items_whose_answer_letter_scores_highest():
    model, tokenizer = tiny_model()
    items = load_arc(FIXTURES / "arc" / "ARC-Challenge", limit=None, shots=1)
    assert [i.answer for i in items] == ["B", "A"] and items[0].prompt.count("\nAnswer: ") == 1
    result = choice_accuracy(model, tokenizer, items)
    # The same choice made by hand: the full model's next-token logits over the four letters
    from paramem.model.scoring import first_token_ids

    letters = [first_token_ids(tokenizer, [letter])[0] for letter in "ABCD"]
    expected = 0
    for item in items:
        ids = tokenizer(item.prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
        logits = model(ids).logits[0, -1, letters]
        expected += "ABCD"[int(logits.argmax())] == item.answer
    assert result["n"] == 2 and result["accuracy"] == expected / 2
