"""paramem remember and remember-many: learning conversation files into a user's memory."""

from __future__ import annotations

from pathlib import Path

import typer

from paramem.cli.app import app, errors, exits_cleanly
from paramem.cli.options import (
    BaseModelOption,
    DtypeOption,
    HomeOption,
    KeepTextOption,
    NotesCacheOption,
    RegenerateNotesOption,
    TeacherKeyEnvOption,
    TeacherModelOption,
    TeacherOption,
    TeacherUrlOption,
    chosen_dtype,
    chosen_teacher,
    learning_options,
)
from paramem.cli.progress import StepLog, console, learn_with_progress
from paramem.config import TrainConfig
from paramem.errors import InputError


@app.command("remember", rich_help_panel="Learn")
@exits_cleanly
@learning_options
def remember_command(
    file: Path = typer.Argument(..., help="conversation file (JSONL, ShareGPT, ChatGPT export, LoCoMo, MSC, MaLP)"),
    user: str = typer.Option(..., "--user", "-u", help="whose memory to add to"),
    format: str | None = typer.Option(None, "--format", help="file format (default: detected)"),
    base_model: str | None = BaseModelOption,
    teacher: str = TeacherOption,
    teacher_model: str | None = TeacherModelOption,
    teacher_url: str | None = TeacherUrlOption,
    teacher_key_env: str = TeacherKeyEnvOption,
    keep_text: str = KeepTextOption,
    regenerate_notes: bool = RegenerateNotesOption,
    notes_cache: bool = NotesCacheOption,
    dtype: str | None = DtypeOption,
    home: Path | None = HomeOption,
    train: TrainConfig = None,
):
    """Learn conversations into USER's memory (skips the ones already learned)."""
    from paramem.config import DEFAULT_MODEL, RememberConfig
    from paramem.data.formats import load_conversations
    from paramem.store.user import UserMemory

    conversations = load_conversations(file, format)  # validated before anything is touched
    stored_model = UserMemory(user, home).settings().get("base_model")
    config = RememberConfig(
        base_model=base_model or stored_model or DEFAULT_MODEL,
        keep_text=keep_text,
        regenerate_notes=regenerate_notes,
        notes_cache=notes_cache,
        dtype=chosen_dtype(dtype),
        train=train,
    )
    learned = learn_with_progress(
        user, conversations, chosen_teacher(teacher, teacher_model, teacher_url, teacher_key_env), config, home
    )
    skipped = len(conversations) - len(learned)
    console.print(
        f"learned {len(learned)} conversation(s) for {user!r}"
        + (f", skipped {skipped} already learned" if skipped else "")
    )
    for record in learned:
        accuracy = "-" if record.heldout_accuracy is None else f"{record.heldout_accuracy:.2f}"
        console.print(
            f"  {record.id}: {record.qa_pairs} pairs, {record.epochs} epochs at lr {record.learning_rate:g},"
            f" loss {record.final_loss:.3f}, held-out {accuracy}, {record.seconds:.0f}s"
        )


@app.command("remember-many", rich_help_panel="Learn")
@exits_cleanly
@learning_options
def remember_many_command(
    source: Path = typer.Argument(
        ...,
        help="a folder of conversation files (one user each, named after the file) "
        'or a JSONL manifest of {"user", "file", "format"}',
    ),
    address: str | None = typer.Option(None, "--address", help="Ray cluster address (default: a local Ray)"),
    cpus_per_user: int = typer.Option(1, "--cpus-per-user", help="CPUs (and torch threads) per user's task"),
    base_model: str | None = BaseModelOption,
    teacher: str = TeacherOption,
    teacher_model: str | None = TeacherModelOption,
    teacher_url: str | None = TeacherUrlOption,
    teacher_key_env: str = TeacherKeyEnvOption,
    dtype: str | None = DtypeOption,
    home: Path | None = typer.Option(
        None, "--home", help="the shared store (default: $PARAMEM_HOME); on a cluster, a path every node sees"
    ),
    train: TrainConfig = None,
):
    """Learn many users' conversations, one Ray task per user, into one shared store."""
    from rich.table import Table

    from paramem.config import DEFAULT_MODEL, RememberConfig
    from paramem.files import paramem_home
    from paramem.lifecycle.distributed import TeacherSpec, read_jobs, remember_many

    if cpus_per_user < 1:
        raise InputError(f"--cpus-per-user must be at least 1, not {cpus_per_user}")
    jobs = read_jobs(source)
    chosen_teacher(teacher, teacher_model, teacher_url, teacher_key_env)  # fail here, not once per user
    config = RememberConfig(
        base_model=base_model or DEFAULT_MODEL,
        dtype=chosen_dtype(dtype),
        train=train,
    )
    with StepLog("users") as log:
        log.status(f"{len(jobs)} to learn", total=len(jobs))

        def on_done(outcome) -> None:
            log.advance(f"{outcome.user}: {'done' if outcome.ok else 'FAILED'}")

        outcomes = remember_many(
            jobs,
            TeacherSpec(teacher, teacher_model, teacher_url, teacher_key_env),
            config,
            home or paramem_home(),
            address,
            cpus_per_user,
            on_done,
        )
    table = Table(title=f"{len(jobs)} users")
    for column in ("user", "status", "learned", "skipped", "seconds", "error"):
        table.add_column(column)
    for o in outcomes:
        table.add_row(
            o.user, "ok" if o.ok else "failed", str(o.learned), str(o.skipped), f"{o.seconds:.0f}", o.error or ""
        )
    console.print(table)
    failed = [o for o in outcomes if not o.ok]
    if failed:
        for o in failed:
            errors.print(f"error: {o.user}: {o.error}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2)
