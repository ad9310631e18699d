"""``mlsrv serve``'s process-wide settings: the event loop it runs on."""

from __future__ import annotations

import asyncio

import pytest

from mlsrv.cli.runner import run
from mlsrv.server.process_tuning import event_loop_factory


async def loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_serve_runs_on_uvloop_when_it_is_installed() -> None:
    uvloop = pytest.importorskip("uvloop")
    factory = event_loop_factory()
    assert factory is uvloop.new_event_loop
    assert run(loop_module(), loop_factory=factory).startswith("uvloop")


def test_without_a_factory_commands_run_on_the_stock_loop() -> None:
    assert run(loop_module()).startswith("asyncio")
