"""What the user sees while paramem works: a rich progress bar for learning, a table of results."""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

# Tables are wide: a log file or pipe gets 140 columns instead of rich's 80.
console = Console(width=None if sys.stdout.isatty() else 140)


def learn_with_progress(user: str, conversations, teacher, config, home: Path | None):
    from paramem.remember import Callbacks, remember

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("conversations", total=None, status="teacher is writing notes")
        state = {"id": ""}

        def on_augmented(n: int) -> None:
            progress.update(task, total=n, status="")

        def on_conversation(position: int, total: int, conversation_id: str) -> None:
            state["id"] = conversation_id
            progress.update(task, status=f"{conversation_id}: loading")

        def on_epoch(report) -> None:
            accuracy = "" if report.heldout_accuracy is None else f" held-out {report.heldout_accuracy:.2f}"
            progress.update(
                task,
                status=f"{state['id']}: epoch {report.epoch}/{config.train.epochs} loss {report.loss:.3f}{accuracy}",
            )

        def on_learned(record) -> None:
            progress.advance(task)

        return remember(
            user, conversations, teacher, config, home, Callbacks(on_augmented, on_conversation, on_epoch, on_learned)
        )


def print_results(title: str, results) -> None:
    """One row per method: accuracy with yes and no apart under each decision rule; the rule `ask` uses
    for the method's readout (*) also with its 95% interval."""
    from paramem.evaluate.run import DECISION_RULES, MAIN_RULE

    table = Table(title=title)
    for column in (
        "method",
        "readout",
        *(f"{rule} rule" for rule in DECISION_RULES),
        "yes-rate*",
        "AUC",
        "n",
        "prompt tok",
        "seconds",
    ):
        table.add_column(column)
    for r in results:
        main = MAIN_RULE[r.readout]
        cells = []
        for rule in DECISION_RULES:
            m = r.metrics.get(rule)
            cell = "-" if m is None else f"{m.accuracy:.3f} ({m.yes_accuracy:.2f}/{m.no_accuracy:.2f})"
            if m is not None and rule == main:
                low, high = m.intervals.get("accuracy", (float("nan"), float("nan")))
                cell = f"*{cell} [{low:.2f}, {high:.2f}]"
            cells.append(cell)
        yes_rate = r.metrics[main].yes_rate if main in r.metrics else float("nan")
        table.add_row(
            r.method,
            r.readout,
            *cells,
            f"{yes_rate:.2f}",
            f"{r.auc[0]:.3f}",
            str(r.metrics["raw"].n),
            str(r.prompt_tokens),
            f"{r.seconds:.1f}",
        )
    console.print(table)
    console.print(
        "accuracy (yes-accuracy/no-accuracy) under each rule; * the rule `ask` uses for that readout. "
        "prior: the score minus that of a content-free question; heldout: a threshold fitted on the teacher's "
        "held-out reworded pairs; balanced: their median score; raw: P(yes) > P(no), or similarity above the fixed "
        "recall threshold. "
        "AUC: how well the scores rank yes probes above no probes, whatever the threshold (0.5 = none)"
    )
