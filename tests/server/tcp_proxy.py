"""A loopback TCP proxy a test can slow down and cut: "the object store went away mid-download".

Runs its own event loop in a thread, so it keeps forwarding while the test's loop is busy. Every
wait is bounded by the callers (``stop`` joins with a timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading


class TcpProxy:
    """Forwards ``127.0.0.1:port`` to ``127.0.0.1:target``; :meth:`cut` drops every connection and
    refuses new ones until :meth:`restore`; ``rate`` (bytes/s, 0 = unlimited) slows answers down."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.rate = 0
        self._cut = False
        self._loop = asyncio.new_event_loop()
        self._writers: set[asyncio.StreamWriter] = set()
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(128)
        self.port = int(self._listener.getsockname()[1])
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._started = threading.Event()

    def __enter__(self) -> TcpProxy:
        self._thread.start()
        assert self._started.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def cut(self) -> None:
        self._cut = True
        self._loop.call_soon_threadsafe(self._close_all)

    def restore(self) -> None:
        self._cut = False

    def _close_all(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()

    def _run(self) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        server = loop.run_until_complete(asyncio.start_server(self._serve, sock=self._listener))
        self._started.set()
        try:
            loop.run_forever()
        finally:  # stopped by __exit__: close everything this thread opened
            server.close()
            self._close_all()
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, server.wait_closed(), return_exceptions=True))
            loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._cut:
            writer.transport.abort()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, upstream_writer))
        try:
            await asyncio.gather(self._pipe(reader, upstream_writer, False), self._pipe(upstream_reader, writer, True))
        finally:
            for end in (writer, upstream_writer):
                self._writers.discard(end)
                end.transport.abort()

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, answer: bool) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while not self._cut:
                chunk = await source.read(16384)
                if not chunk:
                    break
                if answer and self.rate:
                    await asyncio.sleep(len(chunk) / self.rate)
                if self._cut:
                    break
                sink.write(chunk)
                await sink.drain()
        if self._cut:
            sink.transport.abort()
