"""Runs a command body and turns an ``MlsrvError`` into one stderr line and the error table's exit code.

Every command ends in ``run(...)`` so no command prints a traceback for an expected failure.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, NoReturn, TypeVar

import typer

from mlsrv.errors import MlsrvError

T = TypeVar("T")


def fail(error: MlsrvError) -> NoReturn:
    """Print one line for ``error`` on stderr and exit with the code the error table gives it."""
    from rich.console import Console

    Console(stderr=True, highlight=False, soft_wrap=True).print(
        f"[red]{type(error).__name__}[/]: {error.message}", markup=True
    )
    raise typer.Exit(error.exit_code)


def run(action: Callable[[], T] | Coroutine[Any, Any, T]) -> T:
    """Run a command body (a callable or a coroutine); an ``MlsrvError`` becomes one line and an exit code."""
    try:
        if asyncio.iscoroutine(action):
            return asyncio.run(action)
        assert callable(action)
        return action()
    except MlsrvError as error:
        fail(error)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
