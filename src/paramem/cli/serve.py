"""paramem serve: the OpenAI-compatible API and its page."""

from __future__ import annotations

from pathlib import Path

import typer

from paramem.cli.app import app, exits_cleanly
from paramem.cli.options import (
    DtypeOption,
    HomeOption,
    chosen_dtype,
)
from paramem.cli.progress import console
from paramem.errors import InputError


@app.command("serve", rich_help_panel="Serve")
@exits_cleanly
def serve_command(
    base_model: str | None = typer.Option(None, "--base-model", help="default: the embedded default model"),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port", min=1, max=65535),
    cache: int = typer.Option(8, "--cache", help="memories kept loaded (least recently used goes first)"),
    max_tokens: int = typer.Option(256, "--max-tokens", help="the longest reply a request may ask for"),
    batch: int = typer.Option(8, "--batch", help="replies decoded together, several users' memories in one pass"),
    job_workers: int = typer.Option(1, "--job-workers", help="learning and forgetting jobs run at once"),
    keep_conversations: bool = typer.Option(
        False, "--keep-conversations", help="keep uploaded conversations' text in the manifest"
    ),
    dtype: str | None = DtypeOption,
    home: Path | None = HomeOption,
):
    """An OpenAI-compatible API: model paramem:<user> answers from that user's memory."""
    import socket

    import uvicorn

    from paramem.model.loading import DEFAULT_MODEL
    from paramem.serve.app import create_app
    from paramem.serve.config import ServeConfig
    from paramem.serve.server import MemoryServer

    config = ServeConfig(
        base_model or DEFAULT_MODEL,
        home,
        cache,
        max_tokens,
        chosen_dtype(dtype),
        keep_conversations=keep_conversations,
        max_batch=batch,
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
