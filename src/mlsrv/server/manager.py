"""Manager: owns every loaded version, moves versions between states, and hands out leases.

TF Serving's ``AspiredVersionsManager`` at Python size. A source tells it which versions it wants
(``set_aspired``); one reconcile task per model asks the policy for the next action and performs it,
one at a time, until the policy has nothing left to do. Events drive it: there is no polling loop.
Loads and unloads run on the Server's executor; everything else runs on the event-loop thread.

States: START -> LOADING -> AVAILABLE | END(error), AVAILABLE -> UNLOADING -> END. Each transition
is reported to the ``StateMonitor``. A version being unloaded first refuses new leases, then waits
until its in-flight leases are returned (TF's quiescing) *and* its model calls have finished, and
only then calls ``Loader.unload``. Leases alone are not enough: a request whose deadline passes
returns its lease while its call keeps running on an executor thread (a thread cannot be
cancelled), so every loaded servable is handed out wrapped in :class:`TrackedServable`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from mlsrv.errors import FailedPrecondition, InvalidArgument, LoadError, MlsrvError, ModelNotFound
from mlsrv.protocol.types import ModelSpec, SignatureInfo, State
from mlsrv.server.ids import ServableId
from mlsrv.server.monitor import StateMonitor, Waiters
from mlsrv.server.policy import Load, Policy, Snapshot, availability_preserving
from mlsrv.server.servable import Loader, Servable

log = logging.getLogger(__name__)


class TrackedServable:
    """A servable that counts its running calls, on whatever thread they run, so unload can wait.

    ``run`` may be called from executor threads, batcher threads or the loop itself; the count is
    kept under a lock and waiters on the loop are woken with ``call_soon_threadsafe``.
    """

    def __init__(self, inner: Servable, loop: asyncio.AbstractEventLoop) -> None:
        self.inner = inner
        self._loop = loop
        self._lock = threading.Lock()
        self._running = 0
        self._idle_waiters: list[asyncio.Future[None]] = []

    def signatures(self) -> Mapping[str, SignatureInfo]:
        return self.inner.signatures()

    def run(
        self, signature: str, inputs: Mapping[str, np.ndarray], output_filter: Sequence[str] = ()
    ) -> dict[str, np.ndarray]:
        with self._lock:
            self._running += 1
        try:
            return self.inner.run(signature, inputs, output_filter)
        finally:
            with self._lock:
                self._running -= 1
                waiters = self._idle_waiters if self._running == 0 else []
                if waiters:
                    self._idle_waiters = []
            for waiter in waiters:
                self._loop.call_soon_threadsafe(_resolve, waiter)

    @property
    def running(self) -> int:
        with self._lock:
            return self._running

    async def wait_idle(self) -> None:
        """Return once no call is running (immediately if none is)."""
        while True:
            with self._lock:
                if self._running == 0:
                    return
                waiter = self._loop.create_future()
                self._idle_waiters.append(waiter)
            await waiter


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)

LoaderFactory = Callable[[ServableId, str], Loader]


class Lease:
    """A servable that cannot finish unloading until the lease is returned. Keep it short-lived.

    Held by a ``with`` block on the loop; entering counts the version's leases, leaving the last one
    sets its ``drained`` event.
    """

    __slots__ = ("_rec", "id", "servable")

    def __init__(self, rec: _Version) -> None:
        assert rec.servable is not None
        self._rec = rec
        self.id: ServableId = rec.id
        self.servable: Servable = rec.servable

    def __enter__(self) -> Lease:
        rec = self._rec
        rec.leases += 1
        rec.drained.clear()
        return self

    def __exit__(self, *exc_info: object) -> None:
        rec = self._rec
        rec.leases -= 1
        if rec.leases == 0:
            rec.drained.set()


@dataclass(frozen=True, slots=True)
class SettleReport:
    """Result of ``wait_until_settled``: versions that failed to load, models still not settled."""

    failed: tuple[tuple[ServableId, MlsrvError], ...] = ()
    pending: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.failed and not self.pending

    def message(self, noun: str = "servable") -> str:
        """TF Serving's text; ``noun="model"`` gives the ReloadConfig wording. For example:

        ``1 servable(s) did not become available: {{{name: m version: 1} due to error: INTERNAL: x}, }``
        """
        parts = [f"{{{sid} due to error: {err.code.name}: {err.message}}}, " for sid, err in self.failed]
        parts += [f"{{{{name: {n}}} due to error: no version became available in time}}, " for n in self.pending]
        return f"{len(parts)} {noun}(s) did not become available: {{{''.join(parts)}}}"


@dataclass(eq=False)
class _Version:
    id: ServableId
    path: str
    aspired: bool = True
    state: State = State.START
    error: MlsrvError | None = None
    loader: Loader | None = None
    servable: TrackedServable | None = None
    leases: int = 0
    drained: asyncio.Event = field(default_factory=asyncio.Event)
    stop_retrying: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.drained.set()


@dataclass(eq=False)
class _Model:
    name: str
    versions: dict[int, _Version] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class Manager:
    """Aspired versions in, AVAILABLE servables out. Loop-thread only (loads run on ``executor``).

    ``max_load_retries`` counts retries after the first attempt (TF's ``max_num_load_retries``), spaced
    by ``load_retry_interval_s`` (<= 0: no wait). A version that still fails ends in END with its
    error and stays there while it is aspired; other versions and models are unaffected.
    """

    def __init__(
        self,
        loader_factory: LoaderFactory,
        executor: Executor,
        monitor: StateMonitor,
        *,
        max_load_retries: int = 5,
        load_retry_interval_s: float = 60.0,
        policy: Policy = availability_preserving,
    ) -> None:
        self._loader_factory = loader_factory
        self._executor = executor
        self._monitor = monitor
        self._max_retries = max(0, max_load_retries)
        self._retry_interval = load_retry_interval_s
        self._policy = policy
        self._models: dict[str, _Model] = {}
        self._labels: dict[str, dict[str, int]] = {}
        #: each model's highest AVAILABLE version, as last resolved; forgotten at any state change of
        #: one of its versions (only ``_transition`` makes a version AVAILABLE or takes it out)
        self._latest: dict[str, _Version] = {}
        self._waiters = Waiters()
        self._stopping = False

    # --- aspired versions -------------------------------------------------------------------------

    def set_aspired(self, name: str, versions: Mapping[int, str]) -> None:
        """Make ``versions`` (version -> path) the aspired set of ``name``; versions left out get unloaded."""
        if self._stopping:
            log.warning("Ignoring aspired versions for %s: the manager is stopping", name)
            return
        self._set_aspired(name, versions)

    def _set_aspired(self, name: str, versions: Mapping[int, str]) -> None:
        model = self._models.setdefault(name, _Model(name))
        for version, path in versions.items():
            rec = model.versions.get(version)
            if rec is None:
                model.versions[version] = rec = _Version(ServableId(name, version), path)
                self._monitor.on_event(rec.id, State.START, None)
            rec.aspired = True
            rec.stop_retrying.clear()
            if rec.state is State.START:
                rec.path = path
        for version, rec in model.versions.items():
            if version not in versions:
                rec.aspired = False
                rec.stop_retrying.set()
        self._flush(model)
        if model.task is None or model.task.done():
            model.task = asyncio.get_running_loop().create_task(self._reconcile(model), name=f"reconcile:{name}")
        model.wake.set()
        self._waiters.notify()

    def _flush(self, model: _Model) -> None:
        """Forget finished un-aspired versions; give an unloaded-then-re-aspired version a fresh start."""
        for version, rec in list(model.versions.items()):
            if rec.aspired:
                if rec.state is State.END and rec.error is None:
                    model.versions[version] = _Version(rec.id, rec.path)
                    self._monitor.on_event(rec.id, State.START, None)
            elif rec.state is State.START:
                # NOTE: TF drops such a version silently and its status stays START; END is the truth.
                del model.versions[version]
                self._monitor.on_event(rec.id, State.END, None)
            elif rec.state is State.END:
                del model.versions[version]

    async def _reconcile(self, model: _Model) -> None:
        while True:
            await model.wake.wait()
            model.wake.clear()
            while (action := self._policy(self._snapshots(model))) is not None:
                rec = model.versions[action.id.version]
                try:
                    await (self._load(rec) if isinstance(action, Load) else self._unload(rec))
                except Exception as exc:  # a bug: end the version rather than loop on it
                    log.exception("Unexpected error handling %s", rec.id)
                    self._transition(rec, State.END, LoadError(f"{type(exc).__name__}: {exc}"))
                self._flush(model)
                self._waiters.notify()

    async def _load(self, rec: _Version) -> None:
        # TF Serving's lines, in its order (basic_manager.cc, loader_harness.cc): scripts wait for them
        log.info("Successfully reserved resources to load servable %s", rec.id)
        log.info("Approving load for servable version %s", rec.id)
        log.info("Loading servable version %s", rec.id)
        self._transition(rec, State.LOADING)
        try:
            rec.loader = loader = self._loader_factory(rec.id, rec.path)
        except Exception as exc:
            self._transition(rec, State.END, _as_error(exc))
            return
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            try:
                rec.servable = TrackedServable(await loop.run_in_executor(self._executor, loader.load), loop)
                log.info("Successfully loaded servable version %s", rec.id)
                self._transition(rec, State.AVAILABLE)
                return
            except Exception as exc:
                error = _as_error(exc)
            log.error("Loading servable: %s failed: %s: %s", rec.id, error.code.name, error.message)
            attempt += 1
            if attempt > self._max_retries or await self._retry_cancelled(rec):
                log.error("Servable %s cannot be loaded: %s: %s", rec.id, error.code.name, error.message)
                self._transition(rec, State.END, error)
                return
            log.info("Retrying load of servable %s: retry %d of %d", rec.id, attempt, self._max_retries)

    async def _retry_cancelled(self, rec: _Version) -> bool:
        """Wait out the retry interval; True if the version is no longer aspired (CancelLoadServableRetry)."""
        if self._retry_interval > 0 and not rec.stop_retrying.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(rec.stop_retrying.wait(), self._retry_interval)
        return not rec.aspired

    async def _unload(self, rec: _Version) -> None:
        log.info("Quiescing servable version %s", rec.id)
        self._transition(rec, State.UNLOADING)
        await rec.drained.wait()
        if rec.servable is not None:
            await rec.servable.wait_idle()  # calls whose requests gave up (deadline) still run
        log.info("Done quiescing servable version %s", rec.id)
        log.info("Unloading servable version %s", rec.id)
        rec.servable = None
        if rec.loader is not None:
            try:
                await asyncio.get_running_loop().run_in_executor(self._executor, rec.loader.unload)
            except Exception:
                log.exception("Unloading servable %s failed", rec.id)
        log.info("Done unloading servable version %s", rec.id)
        self._transition(rec, State.END)

    def _transition(self, rec: _Version, state: State, error: MlsrvError | None = None) -> None:
        rec.state, rec.error = state, error
        self._latest.pop(rec.id.name, None)
        self._monitor.on_event(rec.id, state, error)
        self._waiters.notify()

    # --- queries and leases -----------------------------------------------------------------------

    def in_flight(self) -> int:
        """Leases held plus model calls still running, over every version."""
        return sum(
            rec.leases + (rec.servable.running if rec.servable is not None else 0)
            for model in self._models.values()
            for rec in model.versions.values()
        )

    def model_names(self) -> list[str]:
        """Models that currently have at least one version under management, sorted."""
        return sorted(n for n, m in self._models.items() if m.versions)

    def versions(self, name: str) -> tuple[Snapshot, ...]:
        """The managed versions of ``name``, highest first (empty for an unknown model)."""
        model = self._models.get(name)
        return () if model is None else tuple(sorted(self._snapshots(model), key=lambda s: -s.id.version))

    @staticmethod
    def _snapshots(model: _Model) -> list[Snapshot]:
        return [Snapshot(r.id, r.state, r.aspired) for r in model.versions.values()]

    def _resolve(self, spec: ModelSpec) -> _Version:
        """TF's ServableRequest resolution: explicit version, else label, else the highest AVAILABLE."""
        if not spec.name:
            raise InvalidArgument("ModelSpec has no name specified.")
        version = spec.version
        if version is None and spec.label is not None:  # an explicitly empty label is unknown too
            labels = self._labels.get(spec.name, {})
            if spec.label not in labels:
                raise InvalidArgument(f"Unrecognized servable version label: {spec.label}")
            version = labels[spec.label]
        if version is None:
            latest = self._latest.get(spec.name)
            if latest is None:
                latest = self._latest[spec.name] = self._highest_available(spec.name)
            return latest
        model = self._models.get(spec.name)
        rec = None if model is None else model.versions.get(version)
        if rec is not None and rec.state is State.AVAILABLE:
            return rec
        raise ModelNotFound(f"Servable not found for request: Specific({spec.name}, {version})")

    def _highest_available(self, name: str) -> _Version:
        model = self._models.get(name)
        recs = [] if model is None else [r for r in model.versions.values() if r.state is State.AVAILABLE]
        if not recs:
            raise ModelNotFound(f"Servable not found for request: Latest({name})")
        return max(recs, key=lambda r: r.id.version)

    def peek(self, spec: ModelSpec) -> tuple[ServableId, Servable]:
        """Resolve ``spec`` without a lease (for metadata, which does not run the model)."""
        rec = self._resolve(spec)
        assert rec.servable is not None
        return rec.id, rec.servable

    def lease(self, spec: ModelSpec) -> Lease:
        """Resolve ``spec`` and hold that version until the ``with`` block exits.

        Raises ModelNotFound (no such AVAILABLE version) or InvalidArgument (no name, unknown label).
        A plain object, not a generator-based context manager: it is taken once per request.
        """
        return Lease(self._resolve(spec))

    # --- labels -----------------------------------------------------------------------------------

    def labels(self, name: str) -> dict[str, int]:
        return dict(self._labels.get(name, {}))

    def validate_labels(self, name: str, labels: Mapping[str, int], *, allow_unavailable: bool) -> None:
        """Raise FailedPrecondition unless every label may point where asked (TF UpdateModelVersionLabelMap).

        A label must point at an AVAILABLE version; with ``allow_unavailable`` a label that is new, or
        that keeps its current version, may point at any version (moving one still needs AVAILABLE).
        """
        current = self._labels.get(name, {})
        model = self._models.get(name)
        for label, version in labels.items():
            rec = None if model is None else model.versions.get(version)
            if rec is not None and rec.state is State.AVAILABLE:
                continue
            if allow_unavailable and current.get(label, version) == version:
                continue
            raise FailedPrecondition(
                f"Request to assign label to version {version} of model {name}, "
                "which is not currently available for inference"
            )

    def replace_labels(self, label_maps: Mapping[str, Mapping[str, int]], *, allow_unavailable: bool) -> None:
        """TF's ``UpdateModelVersionLabelMap``: validate every model's labels, then swap the whole map.

        Models absent from ``label_maps`` lose their labels. All or nothing: one bad label changes nothing.
        """
        for name, labels in label_maps.items():
            self.validate_labels(name, labels, allow_unavailable=allow_unavailable)
        self._labels = {name: dict(labels) for name, labels in label_maps.items() if labels}

    # --- waiting and shutdown ---------------------------------------------------------------------

    def _settled(self, name: str) -> bool:
        model = self._models.get(name)
        aspired = [] if model is None else [r for r in model.versions.values() if r.aspired]
        return bool(aspired) and all(r.state in (State.AVAILABLE, State.END) for r in aspired)

    async def wait_until_settled(
        self, names: Iterable[str] | None = None, timeout: float | None = None
    ) -> SettleReport:
        """Wait until each model's aspired versions are all AVAILABLE or failed (END), or ``timeout``.

        ``names=None`` means every model known now. A model with no aspired version (e.g. no version
        directory yet) is not settled: TF Serving's startup waits for it forever; pass a timeout.
        """
        targets = list(self._models) if names is None else list(names)
        await self._waiters.wait_for(lambda: all(self._settled(n) for n in targets), timeout)
        failed: list[tuple[ServableId, MlsrvError]] = []
        for n in targets:
            model = self._models.get(n)
            for rec in [] if model is None else sorted(model.versions.values(), key=lambda r: r.id.version):
                if rec.aspired and rec.state is State.END and rec.error is not None:
                    failed.append((rec.id, rec.error))
        return SettleReport(tuple(failed), tuple(n for n in targets if not self._settled(n)))

    async def stop(self, timeout: float = 30.0) -> None:
        """Unaspire everything, wait (up to ``timeout``) for the unloads, then stop the reconcile tasks."""
        self._stopping = True
        for name in list(self._models):
            self._set_aspired(name, {})
        done = await self._waiters.wait_for(lambda: not any(m.versions for m in self._models.values()), timeout)
        if not done:
            left = [str(r.id) for m in self._models.values() for r in m.versions.values()]
            log.warning("Stopping with versions not unloaded after %.1f s: %s", timeout, ", ".join(left))
        tasks = [m.task for m in self._models.values() if m.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _as_error(exc: Exception) -> MlsrvError:
    return exc if isinstance(exc, MlsrvError) else LoadError(f"{type(exc).__name__}: {exc}")
