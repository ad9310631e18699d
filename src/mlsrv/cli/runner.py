"""Runs a command body and turns an ``MlsrvError`` into one stderr line and the error table's exit code.

Every command ends in ``run(...)`` so no command prints a traceback for an expected failure.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from mlsrv.errors import MlsrvError

if TYPE_CHECKING:
    import asyncio

T = TypeVar("T")


def error_console() -> Console:
    """stderr console for error lines: no wrapping, no highlighting and no ``:emoji:`` codes."""
    return Console(stderr=True, highlight=False, soft_wrap=True, emoji=False)


def print_error(label: str, message: str) -> None:
    """``label: message`` on stderr, ``label`` in red; ``message`` (user or server text) is printed literally:
    never read as Rich markup (``[name]``, ``[/]``) or emoji codes (``:abc:``)."""
    line = Text()
    line.append(label, style="red")
    line.append(": ")
    line.append(message)
    error_console().print(line)


def fail(error: MlsrvError) -> NoReturn:
    """Print one line for ``error`` on stderr and exit with the code the error table gives it."""
    label = type(error).__name__ if error.received_http_status is None else f"HTTP {error.received_http_status}"
    print_error(label, error.message)
    raise typer.Exit(error.exit_code)


def run(
    action: Callable[[], T] | Coroutine[Any, Any, T],
    *,
    reraise: bool = False,
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None,
) -> T:
    """Run a command body (a callable or a coroutine); an ``MlsrvError`` becomes one line and an exit code,
    or, with ``reraise``, goes to the caller (which words the line itself). A coroutine runs on a
    new loop from ``loop_factory`` (Python 3.11+; the stock loop otherwise)."""
    import asyncio  # here, not at import: `mlsrv --help` and completion do not need it

    try:
        if asyncio.iscoroutine(action):
            if loop_factory is not None and hasattr(asyncio, "Runner"):
                with asyncio.Runner(loop_factory=loop_factory) as runner:
                    return runner.run(action)
            return asyncio.run(action)
        assert callable(action)
        return action()
    except MlsrvError as error:
        if reraise:
            raise
        fail(error)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
