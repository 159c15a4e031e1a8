"""`paramem demo`: the main job on the embedded default model, offline, in minutes.

It runs as a user's memory does (issue 38): the conversations are indexed first and the answer path
answers a few questions from their text at once, with its evidence; then the memory consolidates
them, and the figures set the memory beside the text and the base model alone.

Eight short conversations and 48 yes/no probes written for paramem (half yes, half no, worded unlike
anything in the conversations, the no's near misses) ship with the package, with the teacher's notes
made by paramem's own `local` teacher, so the demo needs no teacher run unless asked.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

from paramem.augment.pairs import PairConfig, heldout_pairs
from paramem.augment.teachers import make_teacher
from paramem.augment.teaching import NotesCache
from paramem.cli.progress import console, learn_with_progress, print_results
from paramem.config import DEFAULT_MODEL, RememberConfig, TrainConfig
from paramem.data.formats import load_conversations
from paramem.data.notes import Notes
from paramem.evaluate.probes import load_probes
from paramem.evaluate.run import evaluate_yes_no, run_meta, write_json
from paramem.files import cache_home
from paramem.model.loading import dtype_of
from paramem.read.loading import load_memory
from paramem.read.readers import READOUTS
from paramem.read.recall import recall_cues

DEMO_USER = "demo"
DEMO_TEACHER = "local"  # the teacher whose notes ship in demo_data/notes.json
DEMO_PAIRS = 20  # pairs per conversation and epoch (PLUM trains about 20)
# Asked the moment the conversations are indexed: three the text answers, one it never held.
DEMO_QUESTIONS = (
    "What kind of pots did I use for my tomato seedlings?",
    "Which half marathon did I sign up for?",
    "Did we talk about my rescue cat?",
    "What did I say about my car insurance?",
)


def demo_files() -> tuple[Path, Path, Path]:
    root = Path(str(resources.files("paramem") / "demo_data"))
    return root / "conversations.jsonl", root / "probes.jsonl", root / "notes.json"


def seed_teacher_cache(notes_file: Path, conversations) -> str | None:
    """Put the shipped notes into the teacher cache; returns the teacher name they came from."""
    if not notes_file.exists():
        return None
    shipped = json.loads(notes_file.read_text(encoding="utf-8"))
    teacher = make_teacher(shipped["teacher"], shipped.get("teacher_model"))
    cache = NotesCache(cache_home() / "teacher")
    by_id = {c.id: c for c in conversations}
    for item in shipped["notes"]:
        cache.put(teacher, by_id[item["conversation_id"]], Notes.from_dict(item))
    return shipped["teacher"]


def run_demo(
    base_model: str | None,
    regenerate_notes: bool,
    teacher_kind: str,
    epochs: int,
    home: Path | None,
    json_out: Path | None,
    dtype: str | None = None,
):
    """Learn the demo conversations, then print and return no-memory vs memory results, read by
    recall and by log-odds."""

    conversations_file, probes_file, notes_file = demo_files()
    conversations = load_conversations(conversations_file)
    probes = load_probes(probes_file, {c.id for c in conversations})
    model_name = base_model or DEFAULT_MODEL
    if not regenerate_notes:
        teacher_kind = seed_teacher_cache(notes_file, conversations) or teacher_kind
    teacher = make_teacher(teacher_kind)
    # At most DEMO_PAIRS pairs per conversation and epoch, so that 3 epochs fit the time.
    config = RememberConfig(
        base_model=model_name,
        regenerate_notes=regenerate_notes,
        dtype=dtype,
        train=TrainConfig(epochs=epochs, pairs=PairConfig(max_pairs=DEMO_PAIRS)),
    )
    console.print(
        f"paramem demo: {len(conversations)} conversations, {len(probes)} probes, base model "
        f"{model_name}, teacher {teacher.name}"
    )
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="paramem-demo-") as scratch:
        where = home or Path(scratch)
        first = answer_from_the_index(conversations, where, dtype, start)
        learn_with_progress(DEMO_USER, conversations, teacher, config, where)
        learn_seconds = time.perf_counter() - start
        model, tokenizer, memory = load_memory(DEMO_USER, where, dtype)
        notes = memory.notes()
        results = []
        for readout in READOUTS:  # the same models, read both ways, side by side
            methods = ["none", "memory"] + (["paramem"] if readout == "log-odds" else [])
            console.print(f"reading {', '.join(methods)} by {readout} ({time.perf_counter() - start:.0f} s so far)")
            results += evaluate_yes_no(
                model,
                tokenizer,
                probes,
                methods,
                conversations,
                heldout_pairs(notes),
                readout=readout,
                cues=recall_cues(notes),
                form=memory.form,
            )
    print_results(f"demo: {len(probes)} yes/no probes on {len(conversations)} conversations", results)
    console.print(
        f"learned {len(conversations)} conversations in {learn_seconds:.0f} s; "
        f"whole demo {time.perf_counter() - start:.0f} s"
    )
    if json_out:
        write_json(
            results,
            json_out,
            run_meta(
                sys.argv,
                model_name,
                {"conversations": str(conversations_file), "probes": str(probes_file), "teacher": teacher.name},
                dtype_of(model),
            )
            | {"first_answers": first, "learn_seconds": round(learn_seconds, 1)},
        )
        console.print(f"wrote {json_out}")
    return results


def answer_from_the_index(conversations, where: Path, dtype: str | None, start: float) -> list[dict]:
    """Index the conversations (as `remember` does first) and answer DEMO_QUESTIONS from their text,
    before anything is learned; returns each answer with its evidence and when it was printed."""
    from paramem.cli.read import evidence_lines
    from paramem.read.respond import Responder
    from paramem.store.user import UserMemory

    with UserMemory(DEMO_USER, where) as memory:
        memory.texts.add(conversations)
    console.print(f"indexed {len(conversations)} conversations in {time.perf_counter() - start:.1f} s; asking:")
    responder = Responder.for_user(DEMO_USER, where, dtype)
    first = []
    for question, response in zip(DEMO_QUESTIONS, responder.respond(list(DEMO_QUESTIONS))):
        console.print(f"  {question}\n  -> {response.answer}", markup=False, highlight=False)
        for line in evidence_lines(response)[:1]:
            console.print(f"  {line}", markup=False, highlight=False, style="dim")
        first.append(
            {
                "question": question,
                "answer": response.answer,
                "abstained": response.abstained,
                "evidence": sorted({e.conversation for e in response.evidence}),
            }
        )
    seconds = time.perf_counter() - start
    console.print(f"first answers from the index after {seconds:.0f} s; now the memory learns them")
    for row in first:
        row["seconds"] = round(seconds, 1)
    return first
