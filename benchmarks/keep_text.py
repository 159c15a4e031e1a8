"""What dropping the text costs (issue 38, step 5): the demo's conversations learned twice, side by
side, as `paramem demo` learns them (the shipped local teacher's notes, 3 epochs, 20 pairs per epoch),
once with `--keep-text always` and once with `until-consolidated`, where each conversation's notes
are the memory's own once it is learned (`augment.recollected`) and replay reads those.

    .venv/bin/python benchmarks/keep_text.py [--conversations 8] [--epochs 3]

For each mode: seconds to learn (the memory writing its notes included), the memory read alone on
the demo's 48 yes/no probes (the recall readout under its shipped rule, whose held-out pairs come
from the stored notes: the teacher's or the memory's), with yes and no apart and the AUC, beside the
base model with no memory (none); the bytes the user's store takes; the teacher's facts and topics
and the conversations' sentences still found in any file of the user's store; and the
teacher-notes cache entries of these conversations left. With `never` the store ends as with
`until-consolidated` (the same commits, no text indexed before them), so it is not learned a third
time. The demo's probes were written for the demo; nothing was tuned on them here. Homes under
benchmarks/results/keep_text/home/<model>/ (ignored by git; a rerun resumes). Writes
benchmarks/results/keep_text-<model>-<dtype>.json.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

from paramem.augment.pairs import heldout_pairs
from paramem.augment.teachers import make_teacher
from paramem.augment.teaching import NotesCache
from paramem.cli.demo import DEMO_PAIRS, DEMO_TEACHER, demo_files, seed_teacher_cache
from paramem.config import DEFAULT_MODEL, PairConfig, RememberConfig, TrainConfig
from paramem.data.formats import load_conversations
from paramem.evaluate.probes import load_probes
from paramem.evaluate.run import evaluate_yes_no, run_meta, write_results
from paramem.files import cache_home
from paramem.lifecycle.remember import remember
from paramem.model.compute import cpu_info
from paramem.model.loading import dtype_of
from paramem.read.loading import load_memory
from paramem.read.recall import recall_cues
from paramem.store.user import UserMemory

RESULTS = Path(__file__).parent / "results"
HOME = RESULTS / "keep_text" / "home"
MODES = ("always", "until-consolidated")


def store_bytes(memory: UserMemory) -> int:
    return sum(p.stat().st_size for p in memory.root.rglob("*") if p.is_file())


def left_behind(memory: UserMemory, conversations, teacher_notes) -> dict:
    """What of the conversations a reader of the user's files finds: their sentences (8 words or
    more), the teacher's facts, and its topics of two words or more; and how many teacher-notes cache
    entries of these conversations are left (the cache is shared by users, so only theirs are read)."""
    data = b"\n".join(p.read_bytes() for p in memory.root.rglob("*") if p.is_file())
    split = [s for c in conversations for m in c.messages for s in re.split(r"(?<=[.!?])\s+", m.content)]
    sentences = {s for s in split if len(s.split()) >= 8}
    facts = {f.statement for n in teacher_notes for f in n.facts}
    topics = {t.name for n in teacher_notes for t in n.topics if len(t.name.split()) > 1}
    found = {
        kind: {"found": sum(p.encode() in data for p in phrases), "of": len(phrases)}
        for kind, phrases in (("sentences", sentences), ("teacher_facts", facts), ("teacher_topics", topics))
    }
    cached = [e for c in conversations for e in (cache_home() / "teacher").glob(f"v*/*/{c.content_hash}.json")]
    return found | {"cache_entries": len(cached)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--conversations", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--base-model", default=DEFAULT_MODEL)
    args = parser.parse_args()
    conversations_file, probes_file, notes_file = demo_files()
    every = load_conversations(conversations_file)
    conversations = every[: args.conversations]
    learned_ids = {c.id for c in conversations}
    probes = [p for p in load_probes(probes_file, {c.id for c in every}) if p.conversation in learned_ids]
    train = TrainConfig(epochs=args.epochs, pairs=PairConfig(max_pairs=DEMO_PAIRS))
    modes, dtype = {}, None
    for mode in MODES:
        # Seeded for each mode: until-consolidated removes the cache entries it learned from.
        teacher = make_teacher(seed_teacher_cache(notes_file, every) or DEMO_TEACHER)
        teacher_notes = [NotesCache(cache_home() / "teacher").get(teacher, c) for c in conversations]
        start = time.perf_counter()
        config = RememberConfig(base_model=args.base_model, keep_text=mode, train=train)
        learned = remember("demo", conversations, teacher, config, HOME / args.base_model / mode)
        seconds = time.perf_counter() - start
        model, tokenizer, memory = load_memory("demo", HOME / args.base_model / mode)
        dtype = dtype_of(model)
        notes = memory.notes()
        results = evaluate_yes_no(
            model,
            tokenizer,
            probes,
            ["none", "memory"],
            heldout=heldout_pairs(notes),
            readout="recall",
            cues=recall_cues(notes),
            form=memory.form,
        )
        modes[mode] = {
            "learned_now": len(learned),
            "seconds": round(seconds, 1),
            "conversation_seconds": [r.seconds for r in memory.learned()],
            "notes_written_by": sorted({n.written_by for n in notes}),
            "notes": {"topics": sum(len(n.topics) for n in notes), "facts": sum(len(n.facts) for n in notes)},
            "store_bytes": store_bytes(memory),
            "left_behind": left_behind(memory, conversations, teacher_notes),
            "results": [r.to_dict() for r in results],
        }
        del model
        show(mode, modes[mode])
    out = RESULTS / f"keep_text-{args.base_model}-{dtype}.json"
    meta = run_meta(sys.argv, args.base_model, {"conversations": str(conversations_file), "probes": str(probes_file)})
    write_results(out, meta | {"dtype": dtype, "cpu": cpu_info(), "modes": modes})


def show(mode: str, figures: dict) -> None:
    print(f"\n{mode}: learned in {figures['seconds']} s, store {figures['store_bytes']:,} bytes")
    for result in figures["results"]:
        rule = result["main_rule"]
        m = result["metrics"][rule]
        print(
            f"  {result['method']:<7} {rule:<9} acc {m['accuracy']:.3f} yes {m['yes_accuracy']:.2f} "
            f"no {m['no_accuracy']:.2f} auc {result['auc']:.3f}"
        )
    print(f"  left behind: {figures['left_behind']}")


if __name__ == "__main__":
    main()
