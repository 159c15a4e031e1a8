import csv

from conftest import DATA

from paramem.evaluate.capability import choice_accuracy, load_arc, load_mmlu
from paramem.models import tiny_model


def test_mmlu_subset_is_five_shot_and_spread_over_subjects():
    items = load_mmlu(DATA / "mmlu", per_subject=2, subjects=3)
    assert len(items) == 6 and len({i.group for i in items}) == 3
    assert all(i.answer in "ABCD" for i in items)
    first = items[0]
    assert first.prompt.count("\nAnswer: ") == 5 and first.prompt.endswith("\nAnswer:")


def test_full_mmlu_reads_every_test_row_despite_quoted_newlines():
    counts = {
        row["subject"]: int(row["test"])  # the file ends with a total row
        for row in csv.DictReader(open(DATA / "mmlu" / "counts.tsv"), delimiter="\t")
        if row["subject"] != "TOTAL"
    }
    items = load_mmlu(DATA / "mmlu", per_subject=None, subjects=None)
    assert len(items) == sum(counts.values()) == 14042


def test_arc_labels_become_letters():
    items = load_arc(DATA / "arc" / "ARC-Challenge", limit=None)
    assert len(items) > 1100 and {i.answer for i in items} <= set("ABCD")


def test_choice_accuracy_scores_every_item():
    model, tokenizer = tiny_model()
    items = load_arc(DATA / "arc" / "ARC-Challenge", limit=5, shots=1)
    result = choice_accuracy(model, tokenizer, items)
    assert result["n"] == 5 and 0.0 <= result["accuracy"] <= 1.0
