"""What the user sees while paramem works: a rich progress bar for learning, a table of results."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

# Tables are wide: a log file or pipe gets 140 columns instead of rich's 80.
console = Console(width=None if sys.stdout.isatty() else 140)


def learn_with_progress(user: str, conversations, teacher, config, home: Optional[Path]):
    from paramem.remember import Callbacks, remember

    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task("conversations", total=None, status="teacher is writing notes")
        state = {"id": ""}

        def on_augmented(n: int) -> None:
            progress.update(task, total=n, status="")

        def on_conversation(position: int, total: int, conversation_id: str) -> None:
            state["id"] = conversation_id
            progress.update(task, status=f"{conversation_id}: loading")

        def on_epoch(report) -> None:
            accuracy = "" if report.heldout_accuracy is None else f" held-out {report.heldout_accuracy:.2f}"
            progress.update(task, status=f"{state['id']}: epoch {report.epoch}/{config.train.epochs} "
                                         f"loss {report.loss:.3f}{accuracy}")

        def on_learned(record) -> None:
            progress.advance(task)

        return remember(user, conversations, teacher, config, home,
                        Callbacks(on_augmented, on_conversation, on_epoch, on_learned))


def print_results(title: str, results) -> None:
    """One row per method: accuracy with yes and no apart under the prior rule, then the other rules."""
    table = Table(title=title)
    for column in ("method", "accuracy [95% CI]", "yes-acc", "no-acc", "macro-F1", "yes-rate", "AUC", "n",
                   "held-out rule", "raw rule", "prompt tok", "seconds"):
        table.add_column(column)
    for r in results:
        m = r.metrics["prior"]
        low, high = m.intervals.get("accuracy", (float("nan"), float("nan")))
        others = []
        for rule in ("heldout", "raw"):
            o = r.metrics.get(rule)
            others.append("-" if o is None else f"{o.accuracy:.3f} ({o.yes_accuracy:.2f}/{o.no_accuracy:.2f})")
        table.add_row(r.method, f"{m.accuracy:.3f} [{low:.2f}, {high:.2f}]", f"{m.yes_accuracy:.3f}",
                      f"{m.no_accuracy:.3f}", f"{m.macro_f1:.3f}", f"{m.yes_rate:.2f}", f"{r.auc[0]:.3f}", str(m.n), *others,
                      str(r.prompt_tokens), f"{r.seconds:.1f}")
    console.print(table)
    console.print("prior rule: log-odds minus those of a content-free question; held-out rule: threshold fitted on "
                  "the teacher's held-out reworded pairs; raw: P(yes) > P(no). (yes/no accuracy in brackets) AUC: how well "
                  "the log-odds rank yes probes above no probes, whatever the threshold (0.5 = no information)")
