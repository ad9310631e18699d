"""The list of ``mlsrv`` commands. Each command lives in its own module, TF-free at import time."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Attach every command to ``app`` (order here is the order in ``--help``)."""
    from mlsrv.cli import serve

    app.command("serve", no_args_is_help=False)(serve.serve)

    from mlsrv.cli import run as run_cmd
    from mlsrv.cli import show
    from mlsrv.cli.absl_bools import AbslBoolCommand

    # saved_model_cli's commands: their booleans also take absl's --flag=true|false and --noflag forms
    app.command("show", no_args_is_help=True, cls=AbslBoolCommand)(show.show)
    app.command("run", no_args_is_help=True, cls=AbslBoolCommand)(run_cmd.run_command)

    from mlsrv.cli import bench, metadata, predict, status

    app.command("predict", no_args_is_help=True)(predict.predict)
    app.command("metadata", no_args_is_help=True)(metadata.metadata)
    app.command("status", no_args_is_help=True)(status.status)
    app.command("bench", no_args_is_help=True)(bench.bench)

    from mlsrv.cli import abtest

    app.command("abtest", no_args_is_help=True)(abtest.abtest)

    from mlsrv.cli import warmup

    app.command("warmup", no_args_is_help=True)(warmup.warmup)
