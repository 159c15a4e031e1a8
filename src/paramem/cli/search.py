"""paramem search: MiLP's search of a user's LoRAs, learned and stored."""

from __future__ import annotations

from pathlib import Path

import typer

from paramem.cli.app import app, exits_cleanly
from paramem.cli.options import (
    BaseModelOption,
    DtypeOption,
    HomeOption,
    chosen_dtype,
    comma_list,
)
from paramem.cli.progress import console
from paramem.errors import InputError


def int_list(text: str, name: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"{name} must be whole numbers separated by commas, not {text!r}") from None


@app.command("search", rich_help_panel="Learn")
@exits_cleanly
def search_command(
    file: Path = typer.Argument(..., help="USER's conversations (any supported format); at least 2"),
    user: str = typer.Option(..., "--user", "-u", help="whose MiLP memory to search for and store"),
    format: str | None = typer.Option(None, "--format", help="file format (default: detected)"),
    base_model: str | None = BaseModelOption,
    initial: int = typer.Option(8, "--initial", help="random configurations after the base model (paper: 100)"),
    bo: int = typer.Option(8, "--bo", help="configurations proposed by Bayesian optimisation after those"),
    factors: str = typer.Option("loras,layers,rank", "--factors", help="what is searched (the rest fixed)"),
    ranks: str = typer.Option("8,16,32,64,96", "--ranks", help="the ranks r to choose from"),
    layers: str | None = typer.Option(None, "--layers", help="the layers a mask may choose (default: all)"),
    block_size: int = typer.Option(4, "--block-size", help="consecutive layers switched on and off together"),
    max_loras: int | None = typer.Option(None, "--max-loras", help="the largest n (default: the model's depth)"),
    replies: int = typer.Option(3, "--replies", help="replies generated per trial for ROUGE-L"),
    restart: bool = typer.Option(False, "--restart", help="forget the saved trials and search again"),
    seed: int = typer.Option(0, "--seed"),
    dtype: str | None = DtypeOption,
    home: Path | None = HomeOption,
):
    """MiLP: search the LoRA configuration for USER by Bayesian optimisation, then learn and store it."""
    from rich.progress import Progress

    from paramem.config import DEFAULT_MODEL, MiLPTrainConfig
    from paramem.data.formats import load_conversations
    from paramem.lifecycle.personalise import search_user
    from paramem.memory.milp.search import SearchConfig, trials_to_run
    from paramem.store.user import UserMemory

    conversations = load_conversations(file, format)
    if replies < 1:
        raise InputError(f"--replies must be at least 1, not {replies}")
    config = SearchConfig(initial_trials=initial, bo_trials=bo, seed=seed)
    space_options = {
        "factors": comma_list(factors),
        "ranks": int_list(ranks, "--ranks"),
        "candidate_layers": int_list(layers, "--layers") if layers is not None else None,
        "block_size": block_size,
        "max_loras": max_loras,
    }
    stored_model = UserMemory(user, home).settings().get("base_model")
    with Progress(console=console) as progress:
        task = progress.add_task("trials", total=trials_to_run(config))

        def on_trial(trial):
            progress.console.print(
                f"trial {trial.number} ({trial.kind}): n={trial.config['loras']} r={trial.config['rank']} "
                f"loss {trial.loss:.3f} ROUGE-L {trial.rouge_l:.3f} hypervolume {trial.hypervolume:.4f} "
                f"({trial.seconds:.0f}s)"
            )
            progress.update(task, completed=trial.number + 1)

        trials, record = search_user(
            user,
            conversations,
            base_model or stored_model or DEFAULT_MODEL,
            space_options,
            MiLPTrainConfig(seed=seed),
            config,
            replies,
            home,
            chosen_dtype(dtype),
            restart,
            on_trial,
        )
    console.print(f"{len(trials)} trials; chosen: {record['described']}")
    console.print(f"stored in {UserMemory(user, home).milp.root} (chat with it: paramem chat --memory milp)")
