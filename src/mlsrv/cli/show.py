"""``mlsrv show``: what a SavedModel contains, with saved_model_cli's flags and meaning.

No flags but ``--dir`` lists the tag-sets; ``--tag_set`` lists that MetaGraph's signature keys;
``--tag_set`` + ``--signature_def`` shows one signature's inputs, outputs and method name; ``--all``
shows everything. ``--dir`` may also be a model base path (numbered version folders, as TF Serving's
``--model_base_path``): the newest version is shown unless ``--version`` picks one.
TensorFlow is imported inside the command, only when there is a SavedModel to read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mlsrv.cli.runner import run
from mlsrv.cli.tf_import import tensorflow_import_muted
from mlsrv.errors import UsageError
from mlsrv.protocol.types import SignatureInfo

if TYPE_CHECKING:
    from mlsrv.server.tf_runtime import MetaGraphInfo, SavedModelInfo

_MARKERS = ("saved_model.pb", "saved_model.pbtxt")


@dataclass(frozen=True, slots=True)
class ModelDir:
    """A resolved ``--dir``: the SavedModel folder, plus the versions when ``--dir`` was a base path."""

    path: Path
    version: int | None = None
    versions: tuple[int, ...] = ()


def _is_saved_model(folder: Path) -> bool:
    return any((folder / marker).is_file() for marker in _MARKERS)


def resolve_model_dir(directory: str, version: int | None = None) -> ModelDir:
    """``directory`` itself when it holds a SavedModel, else its newest (or ``version``) numeric subfolder."""
    folder = Path(directory)
    if not folder.exists():
        raise UsageError(f"SavedModel directory does not exist: {directory}")
    if not folder.is_dir():
        raise UsageError(f"not a directory: {directory}")
    if _is_saved_model(folder):
        if version is not None:
            raise UsageError(f"--version needs a model base path, but {directory} is a SavedModel itself")
        return ModelDir(folder)
    found = {int(c.name): c for c in folder.iterdir() if c.name.isdigit() and c.is_dir() and _is_saved_model(c)}
    if not found:
        raise UsageError(
            f"no SavedModel in {directory}: no saved_model.pb and no numeric version folders containing one"
        )
    versions = tuple(sorted(found))
    chosen = versions[-1] if version is None else version
    if chosen not in found:
        raise UsageError(f"version {chosen} not found in {directory}; available: {', '.join(map(str, versions))}")
    return ModelDir(found[chosen], chosen, versions)


def show(
    dir: Annotated[str, typer.Option("--dir", help="SavedModel folder, or a model base path with numbered versions.")],
    tag_set: Annotated[
        str | None,
        typer.Option("--tag_set", "--tag-set", help="MetaGraph to show, e.g. 'serve' or 'serve,gpu'."),
    ] = None,
    signature_def: Annotated[
        str | None,
        typer.Option("--signature_def", "--signature-def", help="Signature to detail (needs --tag_set)."),
    ] = None,
    all_: Annotated[
        bool,
        typer.Option(
            "--all/--noall",
            help="Show every tag-set, signature and op, and the concrete functions of a TF2 SavedModel.",
            show_default=False,
        ),
    ] = False,
    list_ops: Annotated[
        bool,
        typer.Option(
            "--list_ops/--nolist_ops", "--list-ops", help="Also list the ops the MetaGraph uses.", show_default=False
        ),
    ] = False,
    version: Annotated[
        int | None, typer.Option("--version", help="Version to show when --dir is a base path (default: newest).")
    ] = None,
    json_: Annotated[bool, typer.Option("--json", help="Machine-readable output (docs/cli-json.md).")] = False,
) -> None:
    """Show the tag-sets, signatures, tensors and ops of a SavedModel (saved_model_cli show).

    Without --tag_set: the tag-sets. With --tag_set: its signature keys.

    With --tag_set and --signature_def: that signature's inputs and outputs (dtype, shape, tensor name), method name.

    --all: everything, with the concrete functions of TF2 SavedModels.
    """
    run(lambda: _show(dir, tag_set, signature_def, all_, list_ops, version, json_))


def _show(
    directory: str,
    tag_set: str | None,
    signature_def: str | None,
    all_: bool,
    list_ops: bool,
    version: int | None,
    as_json: bool,
) -> None:
    if signature_def is not None and tag_set is None and not all_:
        raise UsageError("--signature_def needs --tag_set (for example --tag_set serve)")
    model = resolve_model_dir(directory, version)
    with tensorflow_import_muted():
        from mlsrv.server import tf_runtime
    from mlsrv.cli import render  # here, not at import: `mlsrv --help` stays light

    info = tf_runtime.inspect_saved_model(str(model.path))
    console = render.make_console()
    # --all ends with the TF2 functions, as saved_model_cli's does (loads the model; None for TF1 exports)
    functions = tf_runtime.list_concrete_functions(str(model.path)) if all_ else None
    if as_json:
        document = _document(model, info, tag_set, signature_def, all_, list_ops)
        if all_:
            document["concrete_functions"] = None if functions is None else functions["functions"]
            document["concrete_functions_error"] = None if functions is None else functions["error"]
        render.print_json(console, document)
        return
    if model.version is not None:
        listed = ", ".join(str(v) for v in model.versions)
        console.print(f"Versions: {listed} (showing {model.version}: {model.path})", markup=False)
        if not all_:  # --all starts with its own blank line, as saved_model_cli's does
            console.print()
    if all_:
        for meta_graph in sorted(info.meta_graphs, key=lambda m: list(m.tags)):
            header = f"MetaGraphDef with tag-set: '{', '.join(meta_graph.tags)}' contains the following SignatureDefs:"
            render.render_signatures(console, meta_graph.signatures, header=header)
            render.render_ops(console, meta_graph.tags, meta_graph.ops)
        if functions is not None:  # written as is: saved_model_cli's text has control characters ("\b\b")
            console.file.write(functions["text"])
            console.file.flush()
        return
    if tag_set is None:
        if list_ops:
            typer.echo("--list_ops must be paired with a tag-set or with --all.", err=True)
        render.render_tag_sets(console, info.tag_sets)
        return
    meta_graph = info.meta_graph(tag_set)
    if list_ops:
        render.render_ops(console, meta_graph.tags, meta_graph.ops)
    if signature_def is None:
        render.render_signature_keys(console, meta_graph.signatures)
        return
    signature = pick_signature(meta_graph, signature_def)
    if console.is_terminal:
        console.print(render.signature_table(signature_def, signature))
    else:
        render.render_signature(console, signature)


def pick_signature(meta_graph: MetaGraphInfo, key: str) -> SignatureInfo:
    """The signature ``key`` of ``meta_graph``; UsageError listing the available keys when it is absent."""
    if key not in meta_graph.signatures:
        available = ", ".join(sorted(meta_graph.signatures)) or "none"
        raise UsageError(
            f"signature_def {key!r} not found in MetaGraphDef with tag-set {','.join(meta_graph.tags)!r}; "
            f"available: {available}"
        )
    return meta_graph.signatures[key]


def _document(
    model: ModelDir,
    info: SavedModelInfo,
    tag_set: str | None,
    signature_def: str | None,
    all_: bool,
    list_ops: bool,
) -> dict[str, Any]:
    """The ``mlsrv show --json`` document (schema in docs/cli-json.md)."""
    from mlsrv.cli import render

    meta_graphs = list(info.meta_graphs) if all_ or tag_set is None else [info.meta_graph(tag_set)]
    entries = []
    for meta_graph in meta_graphs:
        signatures = meta_graph.signatures
        if signature_def is not None and not all_:
            signatures = {signature_def: pick_signature(meta_graph, signature_def)}
        entry: dict[str, Any] = {"tags": list(meta_graph.tags), "signature_defs": render.signatures_to_json(signatures)}
        if all_ or list_ops:
            entry["ops"] = list(meta_graph.ops)
        entries.append(entry)
    return {
        "path": str(model.path),
        "version": model.version,
        "versions": list(model.versions),
        "meta_graphs": entries,
    }
