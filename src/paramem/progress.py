"""What the user sees while paramem works: a rich progress bar for learning, a table of results."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

console = Console()


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
    table = Table(title=title)
    for column in ("method", "accuracy", "yes-acc", "no-acc", "yes-rate", "n", "raw acc", "raw yes/no"):
        table.add_column(column)
    for r in results:
        m, raw = r.metrics, r.raw_metrics
        table.add_row(r.method, f"{m.accuracy:.3f}", f"{m.yes_accuracy:.3f}", f"{m.no_accuracy:.3f}",
                      f"{m.yes_rate:.2f}", str(m.n), f"{raw.accuracy:.3f}",
                      f"{raw.yes_accuracy:.2f}/{raw.no_accuracy:.2f}")
    console.print(table)
    console.print("accuracy: calibrated decision (log-odds minus the prior of a content-free question), "
                  "the same rule for every method; raw: P(yes) > P(no)")
