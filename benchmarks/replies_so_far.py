"""ROUGE and Persona-F1 of a `paramem replies` run that is still under way: every method scored on the
report episodes all of them have replied in so far, from the replies saved in OUT/episodes (nothing
is generated or judged; the finished run's report.md supersedes this).

    .venv/bin/python benchmarks/replies_so_far.py OUT [--methods base,tplp,milp,plum] [--data DIR]

Prints a markdown table and writes OUT/so_far.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

from paramem.evaluate.episodes import select
from paramem.evaluate.personalised import RepliesConfig, episode_scores, load_episodes
from paramem.files import write_atomic
from paramem.metrics.replies import mean_scores


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the run's results folder")
    parser.add_argument("--methods", default="base,tplp,milp,plum")
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("PARAMEM_DATA", "../shared/data")))
    args = parser.parse_args()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    config = RepliesConfig()  # the default run's dataset and report episodes
    folder = args.out / "episodes"
    shared = []  # (episode, its saved replies) where every method has replied
    for episode in select(load_episodes(config, args.data), "report", config.episodes):
        path = folder / f"{episode.id}.json"
        saved = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        if all(m in saved for m in methods):
            shared.append((episode, saved))
    rows = {}
    for method in methods:
        scores = [score for episode, saved in shared for score in episode_scores(episode, saved[method]["replies"])]
        seconds = [saved[method]["seconds"] for _, saved in shared]
        rows[method] = {
            **mean_scores(scores),
            "replies": len(scores),
            "seconds_per_episode": statistics.fmean(seconds) if seconds else None,
        }
    payload = {"episodes": [e.id for e, _ in shared], "methods": rows}
    write_atomic(args.out / "so_far.json", json.dumps(payload, indent=1))
    print(f"{len(shared)} episodes every method has replied in")
    print("| method | ROUGE-1 | ROUGE-L | Persona-F1 | partner P-F1 | replies |")
    print("|---|---|---|---|---|---|")
    for method, r in rows.items():
        cells = [r[k] for k in ("rouge1", "rouge_l", "persona_f1", "partner_persona_f1")]
        print(f"| {method} | " + " | ".join("-" if c is None else f"{c:.3f}" for c in cells) + f" | {r['replies']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
