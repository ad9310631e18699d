"""``mlsrv status``: the state of each version of a served model (GetModelStatus), and ``--wait``.

``mlsrv status -m M --wait AVAILABLE --timeout 60`` polls with backoff until the model (or
``--version``) reaches the state, so scripts and CI can wait for a server they just started: a
refused connection or a model not loaded yet counts as "not yet". On timeout it exits 1 with a line
saying what it saw last; when every version failed to load it exits 1 at once with the load error.
"""

from __future__ import annotations

import enum
from typing import Annotated

import typer

from mlsrv.cli.client_options import (
    ConnectionArgs,
    JsonOpt,
    LabelOpt,
    ModelOpt,
    QuietOpt,
    VersionOpt,
    model_spec,
    timeout_seconds,
    with_connection,
)
from mlsrv.cli.runner import run


class WaitState(str, enum.Enum):
    AVAILABLE = "AVAILABLE"
    LOADING = "LOADING"
    UNLOADING = "UNLOADING"
    END = "END"


#: --timeout without --wait bounds one request; with --wait it bounds the whole wait.
DEFAULT_WAIT_S = 60.0


@with_connection
def status(
    model: ModelOpt,
    wait: Annotated[
        WaitState | None,
        typer.Option(
            "--wait",
            help="Block until the model (or --version) reaches this state; exit 1 after --timeout "
            "(default 60s with --wait).",
            case_sensitive=False,
        ),
    ] = None,
    version: VersionOpt = None,
    label: LabelOpt = None,
    timeout: Annotated[
        str | None,
        typer.Option(
            "--timeout",
            help="Request timeout, or with --wait the whole wait (e.g. 60s; default 30s, 60s with --wait).",
            rich_help_panel="Connection",
        ),
    ] = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    *,
    conn: ConnectionArgs,
) -> None:
    """Show the state of each version of a served model, or wait for one (--wait AVAILABLE)."""
    run(_main(conn, (model, version, label), wait, timeout, json_, quiet))


async def _main(
    conn: ConnectionArgs,
    model: tuple[str, int | None, str | None],
    wait: WaitState | None,
    timeout: str | None,
    as_json: bool,
    quiet: bool,
) -> None:
    from mlsrv.cli import client_render, render  # here, not at import: `mlsrv --help` stays light
    from mlsrv.client.api import Client
    from mlsrv.protocol import json_codec
    from mlsrv.protocol.types import State

    endpoint = conn.endpoint()
    spec = model_spec(*model)
    async with Client(endpoint.transport(), timeout=timeout_seconds(timeout)) as client:
        if wait is None:
            result = await client.status(spec)
        else:
            limit = timeout_seconds(timeout, DEFAULT_WAIT_S)
            result = await client.wait_for(spec, State[wait.value], timeout_s=limit)
    console = render.make_console()
    if as_json:
        client_render.print_wire_json(console, json_codec.encode_status(result))
    elif not quiet:
        client_render.render_status(console, result, spec.label)
