"""``mlsrv serve``: tensorflow_model_server's flags, spelled the same, from one table (``mlsrv.flags``).

The Typer options are generated from that table so help, completions and man pages list every flag.
All options arrive as text (``None`` = not given) and are typed by ``flags.parse_value``, so the
layering "flags < TOML < command line" only sees what the user actually typed. The server package is
imported lazily: ``mlsrv --help`` must not pay for TensorFlow.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from mlsrv import flags
from mlsrv.cli.runner import print_error, run
from mlsrv.errors import ConfigError, MlsrvError

if TYPE_CHECKING:
    import asyncio

    from mlsrv.config import ServerConfig

T = TypeVar("T")


def serve(**values: str | None) -> None:
    """Serve SavedModels over TensorFlow Serving's REST and gRPC APIs (same flags, URLs and protos)."""
    given = run(lambda: flags.parse_given(values)) if values else {}
    if given.get("version"):
        _print_versions()
        return
    from mlsrv.server.process_tuning import pool_tensorflow_cpu_memory

    pool_tensorflow_cpu_memory()  # read by TensorFlow when it first allocates: before it is imported
    from mlsrv.config_loader import load_config

    config = _serving(lambda: load_config(given))
    from mlsrv.server.siblings import Siblings

    siblings = Siblings.from_environment()  # set when this process is one of --workers N
    tag = "" if siblings is None else f"[worker {siblings.index}] "
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s %(levelname)s {tag}%(name)s: %(message)s")
    if config.workers > 1 and siblings is None:
        _supervise(config, values)
        return
    from mlsrv.server.app import Server
    from mlsrv.server.process_tuning import event_loop_factory, tune_process

    tune_process()
    server = _serving(lambda: Server(config, siblings=siblings))
    _serving(server.run(), loop_factory=event_loop_factory())


def _supervise(config: ServerConfig, values: dict[str, str | None]) -> None:
    """``--workers N``: run N servers on the same ports (``server.supervisor``); exits with its code."""
    from mlsrv.server.ports import check_ports
    from mlsrv.server.supervisor import Supervisor, worker_arguments

    def check() -> bool:
        if config.grpc.socket_path:
            raise ConfigError("--workers cannot share --grpc_socket_path: serve gRPC on a TCP port")
        return check_ports(config)

    arguments = worker_arguments(values)
    if _serving(check):  # the default REST port is busy: the workers serve gRPC only
        arguments.append("--rest_api_port=0")
    code = _serving(Supervisor(config.workers, arguments).run())
    if code:
        raise typer.Exit(code)


def _serving(
    action: Callable[[], T] | Coroutine[Any, Any, T],
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
) -> T:
    """:func:`run`, with TF's ``Failed to start server. Error: <CODE>: <message>`` line for a failure."""
    try:
        return run(action, reraise=True, loop_factory=loop_factory)
    except MlsrvError as error:
        print_error("Failed to start server. Error", f"{error.code.name}: {error.message}")
        raise typer.Exit(error.exit_code) from None


def _print_versions() -> None:
    from importlib.metadata import version

    from mlsrv import __version__

    typer.echo(f"TensorFlow ModelServer: mlsrv {__version__}")
    typer.echo(f"TensorFlow Library: {version('tensorflow')}")


def _parameters() -> list[inspect.Parameter]:
    params = []
    for flag in flags.FLAGS:
        metavar = {bool: "BOOL", int: "INT", float: "FLOAT", str: "TEXT"}[flag.type]
        shown: bool | str = False if flag.type is str and flag.default == "" else _default_text(flag.default)
        note = "" if flag.implemented else " (accepted, not implemented)"
        option = typer.Option(
            f"--{flag.name}",
            help=f"{flag.help}{note}",
            metavar=metavar,
            show_default=shown,  # shown by Typer itself: inside help text Rich would eat "[default: ...]"
            rich_help_panel="mlsrv extras" if flag.extra else "TensorFlow Serving flags",
        )
        params.append(
            inspect.Parameter(
                flag.name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[str | None, option]
            )
        )
    return params


def _default_text(value: flags.FlagValue) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _install_signature() -> None:
    params = _parameters()
    serve.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    serve.__annotations__ = {p.name: p.annotation for p in params} | {"return": None}


_install_signature()

__all__: list[Any] = ["serve"]
