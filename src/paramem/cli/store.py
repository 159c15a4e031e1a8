"""paramem forget, users, delete, export and token: what the store holds, and taking it out."""

from __future__ import annotations

from pathlib import Path

import typer

from paramem.cli.app import app, exits_cleanly
from paramem.cli.options import (
    DtypeOption,
    HomeOption,
    chosen_dtype,
)
from paramem.cli.progress import StepLog, console


@app.command("forget", rich_help_panel="What is stored")
@exits_cleanly
def forget_command(
    user: str = typer.Option(..., "--user", "-u"),
    conversation: str = typer.Option(..., "--conversation", "-c", help="the id of the conversation to forget"),
    home: Path | None = HomeOption,
):
    """Take one conversation out of USER's memory: a cartridge is dropped (exact); a sequential
    adapter learns the other conversations again (one learning run each)."""
    from paramem.lifecycle.forget import forget

    with StepLog("forget") as log:
        result = forget(user, conversation, home, lambda i, n, cid: log.status(f"learning {cid} again ({i}/{n})", n))
    exact = "exact" if result.exact else f"not exact: {result.note}"
    console.print(
        f"forgot {result.conversation_id!r} ({result.how}, {exact}); {result.relearned} conversations learned "
        f"again in {result.seconds:.0f} s",
        markup=False,
        highlight=False,
    )


@app.command("users", rich_help_panel="What is stored")
@exits_cleanly
def users_command(
    conversations: bool = typer.Option(False, "--conversations", "-c", help="list each conversation and its state"),
    home: Path | None = HomeOption,
):
    """List the users with a memory: their conversations by state (indexed: answerable from the text;
    consolidating: being learned now; consolidated: learned into the memory), and their memory's form."""
    from collections import Counter

    from paramem.store.user import UserMemory, users

    for name in users(home):
        memory = UserMemory(name, home)
        states = memory.texts.states()
        counts = Counter(states.values())
        line = f"{name}  {len(states)} conversations"
        if counts:
            line += " (" + ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) + ")"
        if memory.current_version() is not None:
            line += f"  {memory.form}"
        milp = memory.milp.record()
        if milp is not None:
            line += f"  milp: {milp.get('described', '')} ({len(milp.get('conversations', []))} conversations)"
        console.print(line, markup=False, highlight=False)
        if conversations:
            kept = memory.texts.ids()
            for cid, state in states.items():
                text = "text kept" if cid in kept else "text not kept"
                console.print(f"  {cid}  {state}  {text}", markup=False, highlight=False)


@app.command("delete", rich_help_panel="What is stored")
@exits_cleanly
def delete_command(
    user: str = typer.Option(..., "--user", "-u"),
    yes: bool = typer.Option(False, "--yes", help="do not ask for confirmation"),
    home: Path | None = HomeOption,
):
    """Remove every file of USER, their conversations' teacher-notes cache entries included."""
    from paramem.augment.teaching import NotesCache
    from paramem.files import cache_home
    from paramem.store.user import UserMemory

    memory = UserMemory(user, home).require()
    if not yes and not typer.confirm(f"delete user {user!r} and everything learned for them?"):
        raise typer.Exit(1)
    with memory:
        cache = NotesCache(cache_home() / "teacher")
        for record in memory.learned():
            cache.remove(record.content_hash)
        memory.delete()
    console.print(f"deleted user {user!r}", markup=False, highlight=False)


@app.command("export", rich_help_panel="What is stored")
@exits_cleanly
def export_command(
    user: str = typer.Option(..., "--user", "-u"),
    out: Path = typer.Option(..., "--out", help="an empty or new folder"),
    format: str = typer.Option("peft", "--format", help="peft (the adapter folder) or merged (a full model)"),
    dtype: str | None = DtypeOption,
    home: Path | None = HomeOption,
):
    """Write USER's memory as a PEFT adapter folder or as a full model with the adapter merged."""
    from paramem.lifecycle.export import export

    folder = export(user, out, format, home, chosen_dtype(dtype))
    console.print(f"wrote {folder}", markup=False, highlight=False)


@app.command("token", rich_help_panel="What is stored")
@exits_cleanly
def token_command(user: str = typer.Option(..., "--user", "-u"), home: Path | None = HomeOption):
    """Make USER's bearer token for `paramem serve` (replacing any earlier one) and print it once; the
    server keeps only its hash."""
    from paramem.store.user import UserMemory

    memory = UserMemory(user, home)  # a new user may get a token and upload their first conversations
    with memory:
        token = memory.tokens.new()
    console.print(token, markup=False, highlight=False)
