"""``mlsrv metadata``: a served model's signatures (GetModelMetadata), rendered like ``mlsrv show``."""

from __future__ import annotations

from mlsrv.cli.client_options import (
    ConnectionArgs,
    JsonOpt,
    LabelOpt,
    ModelOpt,
    QuietOpt,
    SignatureOpt,
    TimeoutOpt,
    VersionOpt,
    model_spec,
    timeout_seconds,
    with_connection,
)
from mlsrv.cli.runner import run
from mlsrv.errors import InvalidArgument
from mlsrv.protocol.types import ModelMetadata


@with_connection
def metadata(
    model: ModelOpt,
    version: VersionOpt = None,
    label: LabelOpt = None,
    signature: SignatureOpt = None,
    timeout: TimeoutOpt = None,
    json_: JsonOpt = False,
    quiet: QuietOpt = False,
    *,
    conn: ConnectionArgs,
) -> None:
    """Show a served model's signatures: inputs, outputs, dtypes and shapes (--signature: just one)."""
    run(_main(conn, (model, version, label, signature), timeout, json_, quiet))


async def _main(
    conn: ConnectionArgs,
    model: tuple[str, int | None, str | None, str | None],
    timeout: str | None,
    as_json: bool,
    quiet: bool,
) -> None:
    from mlsrv.cli import client_render, render  # here, not at import: `mlsrv --help` stays light
    from mlsrv.client.api import Client
    from mlsrv.protocol import json_codec

    endpoint = conn.endpoint()
    spec = model_spec(*model)
    async with Client(endpoint.transport(), timeout=timeout_seconds(timeout)) as client:
        meta = await client.metadata(spec)
    if spec.signature:
        if spec.signature not in meta.signatures:
            raise InvalidArgument(f'Serving signature name: "{spec.signature}" not found in signature def')
        meta = ModelMetadata(meta.spec, {spec.signature: meta.signatures[spec.signature]})
    console = render.make_console()
    if as_json:
        client_render.print_wire_json(console, json_codec.encode_metadata(meta))
        return
    header = None
    if not quiet:
        version = "" if meta.spec.version is None else f" version {meta.spec.version}"
        labelled = f" (label {spec.label})" if spec.label else ""
        header = f"Model {meta.spec.name or spec.name}{version}{labelled} has these signatures:"
    render.render_signatures(console, meta.signatures, header=header)
