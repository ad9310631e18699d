"""The list of ``mlsrv`` commands. Each command lives in its own module, TF-free at import time."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Attach every command to ``app`` (order here is the order in ``--help``)."""
    from mlsrv.cli import serve

    app.command("serve", no_args_is_help=False)(serve.serve)
