"""The `paramem` command. Bad input prints one line, `FILE:LINE: reason`, and exits with code 2."""

from __future__ import annotations

import warnings
from functools import wraps

import typer
from rich.console import Console

from paramem.errors import InputError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="paramem: a parametric memory of a user's past conversations, in a LoRA adapter.",
)
errors = Console(stderr=True)
# transformers warns about its own deprecated internals on every PEFT load; users cannot act on it.
warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)


def exits_cleanly(command):
    """Bad input -> one line on stderr and exit 2; Ctrl-C -> what was committed stays, exit 130."""

    @wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except InputError as error:
            errors.print(f"error: {error}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            errors.print("interrupted: every conversation learned so far is stored; run again to resume")
            raise typer.Exit(130) from None
        except OSError as error:  # a full disk, a folder that cannot be written: not bad input, still one line
            where = f"{error.filename}: " if error.filename else ""
            errors.print(f"error: {where}{error.strerror or error}", markup=False, highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper
