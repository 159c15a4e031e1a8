"""paramem serve: the OpenAI-compatible API and its page."""

from __future__ import annotations

from pathlib import Path

import typer

from paramem.cli.app import app, exits_cleanly
from paramem.cli.options import DtypeOption, HomeOption, chosen_dtype, config_option
from paramem.cli.progress import console
from paramem.errors import InputError
from paramem.serve.config import ServeConfig


@app.command("serve", rich_help_panel="Serve")
@exits_cleanly
def serve_command(
    base_model: str | None = typer.Option(None, "--base-model", help="default: the embedded default model"),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port", min=1, max=65535),
    cache: int = config_option(ServeConfig, "cache_size", "--cache"),
    max_tokens: int = config_option(ServeConfig, "max_new_tokens", "--max-tokens"),
    batch: int = config_option(ServeConfig, "max_batch", "--batch"),
    prefill_wait: float = config_option(ServeConfig, "prefill_wait", "--prefill-wait"),
    job_workers: int = config_option(ServeConfig, "job_workers", "--job-workers"),
    keep_text: str = config_option(ServeConfig, "keep_text", "--keep-text"),
    dtype: str | None = DtypeOption,
    home: Path | None = HomeOption,
):
    """An OpenAI-compatible API: model paramem:<user> answers from that user's memory."""
    import socket

    import uvicorn

    from paramem.config import DEFAULT_MODEL
    from paramem.serve.app import create_app
    from paramem.serve.server import MemoryServer

    config = ServeConfig(
        base_model or DEFAULT_MODEL,
        home,
        cache,
        max_tokens,
        chosen_dtype(dtype),
        keep_text=keep_text,
        max_batch=batch,
        prefill_wait=prefill_wait,
        job_workers=job_workers,
    )
    # Every option is checked, and the port taken, before the model loads or any job resumes.
    listening = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listening.bind((host, port))
    except OSError as error:
        raise InputError(f"cannot listen on {host}:{port} ({error.strerror or error})") from None
    server = MemoryServer(config)
    for job in server.jobs.resume():  # jobs a stopped server left unended
        console.print(f"resuming job {job}", markup=False, highlight=False)
    # On SIGTERM, open streams get 5 s to end; then replies are cancelled and jobs left to resume.
    settings = uvicorn.Config(create_app(server), timeout_graceful_shutdown=5, log_level="info")
    uvicorn.Server(settings).run(sockets=[listening])
