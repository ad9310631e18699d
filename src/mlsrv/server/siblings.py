"""One worker of ``mlsrv serve --workers N`` and what it shares with its siblings, over Unix sockets.

``--workers N`` runs N complete servers (``server.supervisor``), each with its own models, on the same
REST and gRPC ports (``SO_REUSEPORT``: the kernel spreads connections over them). A client reaches
one worker per connection, so whatever it asks must be answered for all of them:

* **readiness**: ``/readyz`` is 200 only when every worker is ready (a worker that is starting or
  restarting makes it 503: a load balancer must not count on capacity that is not there);
* **metrics**: one scrape returns the sum over workers, with TF Serving's names (counters and
  histogram buckets add; gauges such as in-flight requests add too);
* **model config**: a ``HandleReloadConfigRequest`` applied here is applied on every sibling before
  the RPC answers, and saved, so a worker restarted later starts with it, not with the flags'.

Each worker runs a small control server on ``DIR/worker-PID.sock`` (``GET /ready``, ``GET /metrics``,
``POST /reload``); ``DIR/workers.json``, written by the supervisor, lists the workers that should be
up. The supervisor passes ``DIR`` and the worker's index in :data:`ENV_DIR` / :data:`ENV_INDEX`.
The control server is reachable only through the directory (mode 0700), never over TCP.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import aiohttp
from aiohttp import web

from mlsrv.errors import MlsrvError, UnknownError

log = logging.getLogger(__name__)

ENV_DIR: Final = "MLSRV_WORKER_DIR"
ENV_INDEX: Final = "MLSRV_WORKER_INDEX"
REGISTRY: Final = "workers.json"
#: the model config last applied by a reload RPC (a serialized ``ModelServerConfig``)
SAVED_CONFIG: Final = "model_config.pb"
RELOAD_LOCK: Final = "reload.lock"
#: a sibling that does not answer a readiness or metrics question within this is counted as down
ASK_TIMEOUT_S: Final = 2.0
#: the largest model config a reload may carry to a sibling (aiohttp's default is 1 MiB)
CONFIG_MAX_BYTES: Final = 64 << 20
#: a reload may load models: as long as the RPC may take
RELOAD_TIMEOUT_S: Final = 600.0


def control_socket(directory: Path, pid: int) -> Path:
    return directory / f"worker-{pid}.sock"


@dataclass(frozen=True)
class Sibling:
    """One entry of the registry: a worker that should be up."""

    index: int
    pid: int

    def describe(self) -> str:
        return f"worker {self.index} (pid {self.pid})"


def read_registry(directory: Path) -> list[Sibling]:
    """The workers that should be up (the supervisor replaces the file atomically)."""
    try:
        entries = json.loads((directory / REGISTRY).read_text())["workers"]
        return [Sibling(int(entry["index"]), int(entry["pid"])) for entry in entries]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def write_registry(directory: Path, workers: list[Sibling]) -> None:
    """Replace the registry atomically (write, then rename), so a reader never sees half a file."""
    temporary = directory / f".{REGISTRY}.tmp"
    temporary.write_text(json.dumps({"workers": [{"index": w.index, "pid": w.pid} for w in workers]}))
    temporary.replace(directory / REGISTRY)


@dataclass(frozen=True)
class LocalWorker:
    """What this worker's control server answers from: its own readiness, page and reload."""

    not_ready: Callable[[], list[str]]
    metrics_page: Callable[[], str]
    apply_config: Callable[[bytes], Awaitable[None]]
    #: stopping while still listed: not ready for the host (a worker retired by a rolling restart
    #: is not listed, and serves on while it drains)
    draining: Callable[[], bool] = lambda: False


class Siblings:
    """This worker's view of the others; built from the environment the supervisor sets."""

    def __init__(self, directory: Path, index: int) -> None:
        self.directory = directory
        self.index = index
        self._runner: web.AppRunner | None = None

    @classmethod
    def from_environment(cls) -> Siblings | None:
        """None in a server that is not a worker (``--workers 1``, tests)."""
        directory, index = os.environ.get(ENV_DIR), os.environ.get(ENV_INDEX)
        if not directory or index is None:
            return None
        return cls(Path(directory), int(index))

    # -- this worker's control server --

    async def start(self, local: LocalWorker) -> None:
        """Open the control socket (once the worker serves: until then siblings see it as not ready)."""
        app = web.Application(client_max_size=CONFIG_MAX_BYTES)

        async def ready(_request: web.Request) -> web.Response:
            if local.draining():
                return web.json_response({"models_not_available": [], "draining": True}, status=503)
            waiting = local.not_ready()
            return web.json_response({"models_not_available": waiting}, status=503 if waiting else 200)

        async def metrics(_request: web.Request) -> web.Response:
            return web.Response(text=local.metrics_page())

        async def reload(request: web.Request) -> web.Response:
            try:
                await local.apply_config(await request.read())
            except MlsrvError as error:
                return web.json_response({"code": error.code.name, "error": error.message}, status=500)
            return web.json_response({})

        app.router.add_get("/ready", ready)
        app.router.add_get("/metrics", metrics)
        app.router.add_post("/reload", reload)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        path = control_socket(self.directory, os.getpid())
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        await web.UnixSite(self._runner, str(path)).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        with contextlib.suppress(FileNotFoundError):
            control_socket(self.directory, os.getpid()).unlink()

    # -- asking the others --

    def listed(self) -> bool:
        """Whether the supervisor still counts this worker: not when a replacement took its place
        (rolling restart), while it drains alone."""
        return any(sibling.pid == os.getpid() for sibling in read_registry(self.directory))

    def others(self) -> list[Sibling]:
        return [sibling for sibling in read_registry(self.directory) if sibling.pid != os.getpid()]

    async def not_ready(self) -> list[str]:
        """Siblings that are not ready, each with why (starting, models loading, not answering)."""
        answers = await asyncio.gather(*(self._ready(sibling) for sibling in self.others()))
        return [answer for answer in answers if answer]

    async def _ready(self, sibling: Sibling) -> str:
        try:
            status, body = await ask_worker(self.directory, sibling.pid, "GET", "/ready", timeout_s=ASK_TIMEOUT_S)
        except UNREACHABLE:
            return f"{sibling.describe()}: not serving yet"
        if status == 200:
            return ""
        answer = json.loads(body)
        if answer.get("draining"):
            return f"{sibling.describe()}: draining"
        return f"{sibling.describe()}: models not available: {', '.join(answer.get('models_not_available', []))}"

    async def metrics_pages(self) -> list[str]:
        """The Prometheus pages of the siblings that answer (one that is down adds nothing)."""
        others = self.others()
        answers = await asyncio.gather(
            *(ask_worker(self.directory, s.pid, "GET", "/metrics", timeout_s=ASK_TIMEOUT_S) for s in others),
            return_exceptions=True,
        )
        pages = []
        for sibling, answer in zip(others, answers, strict=True):
            if isinstance(answer, BaseException):
                reason = str(answer) or type(answer).__name__
                log.warning("metrics of %s left out of the sum: %s", sibling.describe(), reason)
            elif answer[0] == 200:
                pages.append(answer[1].decode())
        return pages

    async def reload_others(self, config: bytes) -> None:
        """Apply a config on every sibling (after this worker applied it); the first failure is raised."""
        self.save_config(config)
        for sibling in self.others():
            try:
                status, body = await ask_worker(
                    self.directory, sibling.pid, "POST", "/reload", config, timeout_s=RELOAD_TIMEOUT_S
                )
            except UNREACHABLE as error:
                # a worker that is down starts from the saved config, so it will agree once back
                log.warning("%s did not take the reload (it will start with it): %s", sibling.describe(), error)
                continue
            if status != 200:
                raise UnknownError(f"{sibling.describe()} failed to reload: {json.loads(body).get('error', '')}")

    @contextlib.asynccontextmanager
    async def reload_lock(self) -> AsyncIterator[None]:
        """One reload at a time across workers: an exclusive ``flock``, waited for off the loop."""
        with open(self.directory / RELOAD_LOCK, "a") as handle:
            await asyncio.to_thread(fcntl.flock, handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def save_config(self, config: bytes) -> None:
        temporary = self.directory / f".{SAVED_CONFIG}.{os.getpid()}"
        temporary.write_bytes(config)
        temporary.replace(self.directory / SAVED_CONFIG)

    def saved_config(self) -> bytes | None:
        """The config of the last reload RPC, which replaces the flags' models in a (re)started worker."""
        try:
            return (self.directory / SAVED_CONFIG).read_bytes()
        except FileNotFoundError:
            return None


#: what asking a worker that is not (or no longer) serving raises
UNREACHABLE: Final = (OSError, aiohttp.ClientError, asyncio.TimeoutError)


async def ask_worker(
    directory: Path, pid: int, method: str, path: str, body: bytes | None = None, *, timeout_s: float
) -> tuple[int, bytes]:
    """One HTTP call to a worker's control socket: (status, body); raises one of :data:`UNREACHABLE`."""
    connector = aiohttp.UnixConnector(path=str(control_socket(directory, pid)))  # one socket per worker
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.request(
            method, f"http://worker{path}", data=body, timeout=aiohttp.ClientTimeout(total=timeout_s)
        ) as response:
            return response.status, await response.read()
