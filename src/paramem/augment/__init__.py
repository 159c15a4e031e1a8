"""Augment: conversations -> teacher notes -> question/answer pairs."""

from paramem.augment.pairs import PairConfig, QAPair, training_pairs, validation_pairs
from paramem.augment.teachers import (
    ExtractiveTeacher,
    LocalTeacher,
    NotesCache,
    OpenAITeacher,
    Teacher,
    augment,
    make_teacher,
)
from paramem.data.notes import Fact, Notes, Topic

__all__ = [
    "Fact",
    "Notes",
    "Topic",
    "PairConfig",
    "QAPair",
    "training_pairs",
    "validation_pairs",
    "ExtractiveTeacher",
    "LocalTeacher",
    "NotesCache",
    "OpenAITeacher",
    "Teacher",
    "augment",
    "make_teacher",
]
