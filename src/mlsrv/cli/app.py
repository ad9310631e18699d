"""The ``mlsrv`` Typer app: registers every command and maps errors to exit codes in one place.

Importing this module must not import TensorFlow (``mlsrv --help`` and shell completion re-run it on
every TAB); commands import heavy modules inside their function bodies.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, NoReturn

import typer
from typer._click import exceptions as click_exceptions

from mlsrv import __version__, flags
from mlsrv.cli import commands, lean_help
from mlsrv.cli.runner import fail, print_error
from mlsrv.errors import EXIT_USAGE, MlsrvError

app = typer.Typer(
    name="mlsrv",
    no_args_is_help=True,
    rich_markup_mode="rich",
    add_completion=True,
    help="Inspect, run, serve and measure TensorFlow SavedModels. A drop-in TensorFlow Serving replacement.",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version_callback(value: bool) -> None:
    if not value:
        return
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    typer.echo(f"mlsrv {__version__}")
    typer.echo(f"TensorFlow {installed('tensorflow')}")
    typer.echo(f"TensorFlow Serving API {installed('tensorflow-serving-api')}")
    raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print the mlsrv, TensorFlow and TensorFlow Serving API versions and exit.",
            callback=_version_callback,
            is_eager=True,
        ),
    ] = False,
) -> None:
    """Inspect, run, serve and measure TensorFlow SavedModels."""


#: Help width when stdout is not a terminal and neither COLUMNS nor TERMINAL_WIDTH says otherwise: Rich
#: would fall back to 80 columns and cut option names and words with '…' (``mlsrv run --help | less``).
PIPED_HELP_WIDTH = 160


def _prepare_help() -> None:
    """Import typer's help renderer the lean way, and widen it when stdout is piped."""
    lean_help.import_help_renderer()
    if os.environ.get("COLUMNS") or os.environ.get("TERMINAL_WIDTH"):
        return
    try:
        if sys.stdout.isatty():
            return
    except (AttributeError, ValueError):  # no usable stdout: nothing to size
        return
    from typer import rich_utils  # imported just above, the lean way

    rich_utils.MAX_WIDTH = PIPED_HELP_WIDTH


def main(argv: list[str] | None = None) -> NoReturn:
    """Console-script entry point. ``serve`` arguments get TF Serving's bare-boolean syntax normalised."""
    args = list(sys.argv[1:] if argv is None else argv)
    if any(arg in ("-h", "--help") for arg in args) or len(args) <= 1:
        _prepare_help()  # only help (and no-args help) is laid out by width
    if args and args[0] == "serve":
        args = ["serve", *flags.normalize_argv(args[1:])]
    try:
        code = app(args=args, prog_name="mlsrv", standalone_mode=False)
    except click_exceptions.NoArgsIsHelpError as error:  # "mlsrv serve" alone etc.: help, as before
        error.show()
        sys.exit(error.exit_code)
    except click_exceptions.UsageError as error:  # unknown option, missing value ...: one line, exit 2
        print_error("Error", _usage_line(error))
        sys.exit(EXIT_USAGE)
    except click_exceptions.ClickException as error:  # pragma: no cover - other click failures
        print_error("Error", error.format_message())
        sys.exit(error.exit_code)
    except typer.Abort:
        sys.exit(130)
    except MlsrvError as error:  # pragma: no cover - commands use run(); this is the last net
        try:
            fail(error)
        except typer.Exit as exit_:
            sys.exit(exit_.exit_code)
    sys.exit(code if isinstance(code, int) else 0)


def _usage_line(error: click_exceptions.UsageError) -> str:
    """click's message on one line, plus where to look: ``No such option: --x (Possible options: ...)``."""
    message = " ".join(error.format_message().split())
    command = error.ctx.command_path if error.ctx is not None else "mlsrv"
    return f"{message} (see '{command} --help')"


commands.register(app)
