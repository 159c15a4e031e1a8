"""What the user sees while paramem works: a rich progress bar for learning, a table of results."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

# Tables are wide: a log file or pipe gets 140 columns instead of rich's 80.
console = Console(width=None if sys.stdout.isatty() else 140)


class StepLog:
    """Progress as it happens: a rich bar on a terminal; on a pipe or a log file, where a bar prints
    nothing until the end, one timestamped line per step instead."""

    def __init__(self, title: str):
        self.title = title
        self.start = time.perf_counter()
        self.progress = None
        if console.is_terminal:
            self.progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[status]}"),
                TimeElapsedColumn(),
                console=console,
            )
            self.task = self.progress.add_task(title, total=None, status="")

    def __enter__(self) -> StepLog:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()

    def status(self, text: str, total: int | None = None) -> None:
        """A new status line (and, given, the number of steps the bar counts)."""
        if self.progress is not None:
            self.progress.update(self.task, status=text, **({"total": total} if total is not None else {}))
        else:
            elapsed = time.perf_counter() - self.start
            console.print(f"[{elapsed:6.0f}s] {self.title}: {text}", markup=False, highlight=False)

    def advance(self, text: str) -> None:
        """One step done."""
        if self.progress is not None:
            self.progress.advance(self.task)
        self.status(text)


def learn_with_progress(user: str, conversations, teacher, config, home: Path | None):
    from paramem.lifecycle.remember import Callbacks, remember

    with StepLog("conversations") as log:
        state = {"id": "", "position": 0, "total": 0}

        def on_indexed(n: int) -> None:
            if n:
                log.status(f"{n} indexed: `paramem ask` answers from them now; the teacher is writing notes")
            else:
                log.status("teacher is writing notes")

        def on_augmented(n: int) -> None:
            state["total"] = n
            log.status(f"{n} to learn", total=n)

        def on_conversation(position: int, total: int, conversation_id: str) -> None:
            state.update(id=conversation_id, position=position)
            log.status(f"{position}/{total} {conversation_id}: loading")

        def on_epoch(report) -> None:
            accuracy = "" if report.heldout_accuracy is None else f" held-out {report.heldout_accuracy:.2f}"
            log.status(
                f"{state['position']}/{state['total']} {state['id']}: epoch {report.epoch}/"
                f"{config.train.epochs} loss {report.loss:.3f}{accuracy}"
            )

        def on_learned(record) -> None:
            log.advance(f"{state['position']}/{state['total']} {record.id}: learned, epoch {record.epochs} kept")

        return remember(
            user,
            conversations,
            teacher,
            config,
            home,
            Callbacks(on_augmented, on_conversation, on_epoch, on_learned, on_indexed),
        )


def print_results(title: str, results) -> None:
    """One row per method: accuracy with yes and no apart under each decision rule; the rule `ask` uses
    for the method's readout (*) also with its 95% interval."""
    from paramem.read.readers import DECISION_RULES, MAIN_RULE

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
        "accuracy (yes-accuracy/no-accuracy) under each rule; * the rule `ask` uses for that readout "
        "(cartridges read alone: balanced). "
        "prior: the score minus that of a content-free question; heldout: a threshold fitted on the teacher's "
        "held-out reworded pairs; balanced: their median score; raw: P(yes) > P(no), or similarity above the fixed "
        "recall threshold. "
        "AUC: how well the scores rank yes probes above no probes, whatever the threshold (0.5 = none)"
    )
