"""The `paramem` command: every command group registers itself on the one typer app, in the order
`paramem --help` lists them. Bad input prints one line, `FILE:LINE: reason`, and exits with code 2."""

from importlib import import_module

from paramem.cli.app import app

for group in ("learn", "search", "read", "store", "serve", "evaluate"):
    import_module(f"paramem.cli.{group}")

__all__ = ["app"]
