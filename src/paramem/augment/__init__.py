"""Augment: a teacher turns each conversation into notes (data/notes.py), and the notes into
question/answer pairs (pairs.py, worded by templates.py)."""
