"""Regenerate the demo's shipped teacher notes (src/paramem/demo_data/notes.json) with paramem's own teacher.

.venv/bin/python benchmarks/make_demo_notes.py --teacher local --teacher-model qwen2.5-0.5b
"""

from __future__ import annotations

import argparse
import json
import time

from paramem.augment.teachers import make_teacher
from paramem.augment.teaching import augment
from paramem.cli.demo import demo_files
from paramem.data.formats import load_conversations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", default="local")
    parser.add_argument("--teacher-model", default=None)
    args = parser.parse_args()
    conversations_file, _, notes_file = demo_files()
    conversations = load_conversations(conversations_file)
    teacher = make_teacher(args.teacher, args.teacher_model)
    start = time.perf_counter()
    notes = augment(conversations, teacher, cache=None)
    seconds = time.perf_counter() - start
    notes_file.write_text(
        json.dumps(
            {
                "teacher": args.teacher,
                "teacher_model": args.teacher_model,
                "seconds": round(seconds, 1),
                "notes": [n.to_dict() for n in notes],
            },
            indent=1,
            ensure_ascii=False,
        )
        + "\n",
        encoding="utf-8",
    )
    print(f"{teacher.name}: {len(notes)} conversations in {seconds:.0f} s -> {notes_file}")
    for n in notes:
        print(f"{n.conversation_id}: topics {[t.wordings for t in n.topics]}")
        print(f"   negatives {[t.wordings for t in n.negatives]}")
        print(f"   facts {[f.statement for f in n.facts]}")


if __name__ == "__main__":
    main()
