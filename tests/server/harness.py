"""Start a real Server in-process on free 127.0.0.1 ports; ``async with running_server(...) as s``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

from mlsrv import flags
from mlsrv.config_loader import load_config
from mlsrv.server.app import LoaderFactory, Server
from tests.conftest import free_port


@dataclass
class Running:
    server: Server
    rest_url: str
    grpc_target: str
    session: aiohttp.ClientSession

    async def request(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
                      headers: dict[str, str] | None = None,
                      encoded: bool = False) -> tuple[int, Any, aiohttp.ClientResponse]:
        """Send one request; returns (status, parsed JSON or text or None, response).

        ``encoded=True`` sends ``path`` byte for byte (its percent-escapes untouched).
        """
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        url = URL(self.rest_url + path, encoded=True) if encoded else self.rest_url + path
        async with self.session.request(method, url, data=data, headers=headers) as response:
            payload = await response.read()
            parsed: Any = None
            if payload:
                try:
                    parsed = json.loads(payload)
                except ValueError:
                    parsed = payload.decode("utf-8", "replace")
            return response.status, parsed, response

    async def post(self, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        status, parsed, _ = await self.request("POST", path, body, **kw)
        return status, parsed

    async def get(self, path: str) -> tuple[int, Any]:
        status, parsed, _ = await self.request("GET", path)
        return status, parsed


def server_flags(**given: flags.FlagValue) -> dict[str, flags.FlagValue]:
    """Flags for a test server: loopback, free ports, quick polling, no long retry waits."""
    base: dict[str, flags.FlagValue] = {
        "host": "127.0.0.1",
        "port": free_port(),
        "rest_api_port": free_port(),
        "file_system_poll_wait_seconds": 0,
        "max_num_load_retries": 0,
        "load_retry_interval_micros": 0,
    }
    base.update(given)
    return base


@asynccontextmanager
async def running_server(
    *, loader_factory: LoaderFactory | None = None, timeout: float = 120.0, **given: flags.FlagValue
) -> AsyncIterator[Running]:
    """A started Server (models loaded, ports open) and an HTTP session; stopped on exit."""
    config = load_config(server_flags(**given))
    server = Server(config, loader_factory=loader_factory)
    await asyncio.wait_for(server.start(), timeout)
    try:
        async with aiohttp.ClientSession() as session:
            yield Running(
                server,
                f"http://127.0.0.1:{server.rest_port}",
                f"127.0.0.1:{server.grpc_port}",
                session,
            )
    finally:
        await server.stop(grace_s=1.0)
