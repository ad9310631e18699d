"""mlsrv's probe endpoints: /healthz (liveness) and /readyz (every configured model AVAILABLE)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest

from mlsrv.server import rest_connections
from tests.fakes import FakeLoaderFactory
from tests.server.harness import running_server
from tests.server.test_lifecycle_server import version, write_config


def test_liveness_and_readiness(tmp_path: Path) -> None:
    good, bad = tmp_path / "good", tmp_path / "bad"
    version(good, 1)
    version(bad, 1)
    config = write_config(tmp_path / "models.config", {"good": (good, ""), "bad": (bad, "")})

    async def main() -> None:
        factory = FakeLoaderFactory({"bad": {"always_fail": True}})
        async with running_server(loader_factory=factory, model_config_file=config) as s:
            assert await s.get("/healthz") == (200, {"status": "ok"})
            assert await s.get("/readyz") == (503, {"status": "not ready", "models_not_available": ["bad"]})
        async with running_server(loader_factory=FakeLoaderFactory(), model_name="good",
                                  model_base_path=str(good)) as s:
            assert await s.get("/readyz") == (200, {"status": "ready"})

    asyncio.run(main())


def test_readiness_says_why_when_a_base_path_is_missing(tmp_path: Path) -> None:
    good, gone = tmp_path / "good", tmp_path / "gone"
    version(good, 1)
    version(gone, 1)
    config = write_config(tmp_path / "models.config", {"good": (good, ""), "gone": (gone, "")})

    async def main() -> None:
        async with running_server(loader_factory=FakeLoaderFactory(), model_config_file=config,
                                  file_system_poll_wait_seconds=0.05) as s:  # fmt: skip
            assert await s.get("/readyz") == (200, {"status": "ready"})
            shutil.rmtree(gone / "1")  # its only version goes away (unloaded), then its folder too
            for _ in range(200):
                if (await s.get("/readyz"))[0] == 503:
                    break
                await asyncio.sleep(0.02)
            shutil.rmtree(gone)
            for _ in range(200):
                status, body = await s.get("/readyz")
                if status == 503 and "problems" in body:
                    break
                await asyncio.sleep(0.02)
            assert body == {
                "status": "not ready",
                "models_not_available": ["gone"],
                "problems": {"gone": f"Could not find base path {gone} for servable gone with error "
                                     f"NOT_FOUND: {gone} not found"},
            }  # fmt: skip

    asyncio.run(main())


PROBE = b"GET /healthz HTTP/1.1\r\nHost: 10.0.0.1:8501\r\nUser-Agent: kube-probe/1.31\r\nAccept: */*\r\n\r\n"


async def _exchange(port: int, *requests: bytes, answers_each: int = 1) -> list[bytes]:
    """On one connection: send each of ``requests`` in one write and read its ``answers_each`` answers
    before sending the next (so two requests never share a segment unless they share a write)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        answers = []
        for data in requests:
            writer.write(data)
            await writer.drain()
            for _ in range(answers_each):
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                lines = head.split(b"\r\n")
                length = int(next(line.split(b":")[1] for line in lines if line.lower().startswith(b"content-length")))
                answers.append(head + await asyncio.wait_for(reader.readexactly(length), 10))
        return answers
    finally:
        writer.close()


def _without_date(response: bytes) -> bytes:
    return b"\r\n".join(line for line in response.split(b"\r\n") if not line.startswith(b"Date: "))


def test_the_liveness_probe_is_answered_by_the_connection_with_the_frontends_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    version(tmp_path / "m", 1)
    answered: list[str] = []  # the paths the connection answered as the liveness probe
    original = rest_connections.is_liveness_request

    def counting(message: Any, payload: Any) -> bool:
        found = original(message, payload)
        if found:
            answered.append(message.path)
        return found

    monkeypatch.setattr(rest_connections, "is_liveness_request", counting)

    async def main() -> None:
        async with running_server(loader_factory=FakeLoaderFactory(), model_name="m",
                                  model_base_path=str(tmp_path / "m")) as s:  # fmt: skip
            port, guard = s.server.rest_port, s.server.rest_connections
            assert guard is not None and guard.answers_liveness
            fast = await _exchange(port, PROBE, PROBE)  # kept alive: both on one connection
            assert answered == ["/healthz", "/healthz"]
            guard.answers_liveness = False
            frontend = await _exchange(port, PROBE)
            assert len(answered) == 2
            assert _without_date(fast[0]) == _without_date(fast[1]) == _without_date(frontend[0])
            assert fast[0].startswith(b"HTTP/1.1 200 OK\r\n") and fast[0].endswith(b'\r\n\r\n{"status": "ok"}')
            assert any(line.startswith(b"Date: ") and line.endswith(b" GMT") for line in fast[0].split(b"\r\n"))
            guard.answers_liveness = True
            # after a probe the same connection serves the API as usual
            body = b'{"instances": [[1.0]]}'
            predict = (b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       b"Content-Length: %d\r\n\r\n%s" % (len(body), body))  # fmt: skip
            probe_then_api = await _exchange(port, PROBE, predict, PROBE)
            assert b'"predictions"' in probe_then_api[1] and probe_then_api[2].endswith(b'{"status": "ok"}')
            assert len(answered) == 4
            # Connection: close is honoured: the answer, then the end of the stream
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(PROBE.replace(b"Accept: */*", b"Connection: close"))
            closing = await asyncio.wait_for(reader.read(), 10)  # until the server closes
            writer.close()
            assert closing.endswith(b'{"status": "ok"}') and closing.startswith(b"HTTP/1.1 200 OK")
            # pipelined probes and a query string are answered here too; a POST goes to the frontend
            answered.clear()
            pipelined = await _exchange(port, PROBE + PROBE, answers_each=2)
            assert all(a.endswith(b'{"status": "ok"}') for a in pipelined)
            query = await _exchange(port, PROBE.replace(b"/healthz", b"/healthz?verbose"))
            assert query[0].endswith(b'{"status": "ok"}')
            posted = PROBE.replace(b"GET", b"POST").replace(b"\r\n\r\n", b"\r\nContent-Length: 0\r\n\r\n")
            assert (await _exchange(port, posted))[0].startswith(b"HTTP/1.1 200 OK")
            assert answered == ["/healthz", "/healthz", "/healthz?verbose"]
            # what aiohttp's parser makes of the bytes decides: a probe's line inside another request's
            # head (split across segments) is a header value, not a probe
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"POST /v1/models/m:predict HTTP/1.1\r\nHost: x\r\nX-Note: ")
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(b"GET /healthz HTTP/1.1\r\n\r\n")
            smuggled = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            writer.close()
            assert smuggled.startswith(b"HTTP/1.1 400 ") and len(answered) == 3

    asyncio.run(main())
