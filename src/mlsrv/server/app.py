"""``Server``: builds the serving graph from a ``ServerConfig`` and owns its lifetime.

Order matters and follows TF Serving: load every configured model first (ports stay closed), then
open the REST and gRPC ports. Shutdown reverses it: stop polling, close ports (letting in-flight
requests finish), drain batchers, unload models, stop the executors. All state lives on the
instance, so tests can run several servers in one process.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import logging
import os
import signal
import ssl
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, Final

from aiohttp import web

from mlsrv.config import ServerConfig
from mlsrv.config_loader import (
    check_no_platform_changes,
    check_platforms_supported,
    models_from_proto,
    parse_model_server_config,
    parse_model_server_config_bytes,
    validate_models,
)
from mlsrv.errors import ConfigError, ConfigPreconditionError, FailedPrecondition, MlsrvError, UnknownError
from mlsrv.monitoring_config import load_monitoring_config
from mlsrv.protocol.types import ModelStatus, State
from mlsrv.server.access_log import AccessLog
from mlsrv.server.admission import Admission, AdmissionLimits
from mlsrv.server.auth import Authenticator, TokenFile
from mlsrv.server.batching_choice import BatchingChoice, wants_batching
from mlsrv.server.batching_pool import BatchingPool
from mlsrv.server.dataplane import DataPlane
from mlsrv.server.loaders import BatchingFileCheckedLoader, MeteredLoader, on_loop
from mlsrv.server.log_limits import FloodGuard
from mlsrv.server.manager import Manager
from mlsrv.server.metrics import Metrics, sum_pages
from mlsrv.server.monitor import StateEvent, StateMonitor
from mlsrv.server.ports import check_ports
from mlsrv.server.remote_storage import RemoteStorage, default_cache_dir
from mlsrv.server.request_log import RequestLogger
from mlsrv.server.rest import Handler, RestFrontend, health_handlers, prometheus_handler
from mlsrv.server.rest_connections import (
    HANDSHAKE_SETTLE_S,
    ConnectionGuard,
    ConnectionLimits,
    accept_backlog,
    close_listener_serving_its_queue,
    default_max_connections,
    widen_listen_queue,
)
from mlsrv.server.servable import Loader
from mlsrv.server.siblings import LocalWorker, Siblings
from mlsrv.server.source import FileSystemSource
from mlsrv.server.worker_pool import WorkerPool

log = logging.getLogger(__name__)

LoaderFactory = Callable[[Any, str], Loader]

#: CPython's young-generation threshold while serving (its default is 700); see :class:`GcTuning`.
GC_YOUNG_THRESHOLD: Final = 100_000
#: How often, and how long at most, the post-unload re-freeze waits for a moment without requests.
REFREEZE_POLL_S: Final = 0.05
REFREEZE_MAX_WAIT_S: Final = 60.0
#: On stop after recent traffic, both frontends keep serving this long, for requests already queued.
DRAIN_PICKUP_S: Final = 0.25
#: How long, at most, connections accepted before a stop get to send their first request.
NEW_CONNECTION_GRACE_S: Final = 0.5
#: How long in-flight requests get to finish when the server stops (SIGTERM).
SHUTDOWN_GRACE_S: Final = 5.0


class Server:
    """One model server: lifecycle + DataPlane + frontends. ``async with Server(cfg):`` starts and stops it."""

    def __init__(
        self, config: ServerConfig, *, loader_factory: LoaderFactory | None = None, siblings: Siblings | None = None
    ) -> None:
        """``siblings``: set in a worker of ``--workers N`` (see ``server.siblings``), None otherwise."""
        self.config = config
        self.siblings = siblings
        self.metrics, self._metrics_path = _monitoring(config)  # first: a bad file fails before threads exist
        self.auth = _authenticator(config, self._metrics_path if self.metrics is not None else None)
        self._loader_factory = loader_factory
        workers = max(2, min(4, os.cpu_count() or 2))
        self.executor = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="mlsrv-run")
        self._load_executor = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="mlsrv-load")
        self.monitor = StateMonitor()
        self.manager = Manager(
            self._make_loader,
            self._load_executor,
            self.monitor,
            max_load_retries=config.lifecycle.max_load_retries,
            load_retry_interval_s=config.lifecycle.load_retry_interval_s,
        )
        models = config.models
        saved = siblings.saved_config() if siblings is not None else None
        if saved is not None:  # a reload RPC reached the workers before this one (re)started: it wins
            models = models_from_proto(parse_model_server_config_bytes(saved), validate=False)
        lifecycle = config.lifecycle
        remote = RemoteStorage(Path(lifecycle.remote_cache_dir) if lifecycle.remote_cache_dir else default_cache_dir())
        self.source = FileSystemSource(
            models, self.manager, lifecycle.file_system_poll_wait_s, remote, lifecycle.remote_poll_wait_s
        )
        self._models = models
        self._version_paths: dict[Any, str] = {}
        #: bounds the inference requests (and bytes) in the server at once, REST and gRPC together
        self.admission = Admission(AdmissionLimits.resolve(config.max_inflight_requests, config.max_inflight_bytes))
        self.batching = self._batching_pool(config)
        if self.metrics is not None:
            batching = self.batching
            self.metrics.watch_admission(self.admission, batching.queue_totals if batching is not None else dict)
        if self.batching is not None:
            self.monitor.subscribe(self.batching.on_state)
        #: the models' ``logging_config``: sampled calls to PredictionLog TFRecord files
        self.request_log = RequestLogger(
            saved_model_tags=config.runtime.saved_model_tags,
            max_file_bytes=config.request_log_file_bytes,
            max_queue_bytes=config.request_log_queue_bytes,
        )
        self.access_log = _access_log(config)
        if self.metrics is not None:
            self.metrics.watch_request_log(self.request_log.counts)
            if self.access_log is not None:
                self.metrics.watch_access_log(self.access_log)
        self.dataplane = DataPlane(
            self.manager,
            self.monitor,
            self.executor,
            self.batching,
            method_name_check=config.runtime.method_name_check,
            metrics=self.metrics,
            request_log=self.request_log,
        )
        self._runner: web.ServerRunner | None = None
        self._rest_listener: asyncio.Server | None = None
        self._rest_tls: ssl.SSLContext | None = None
        self._rest_frontend: RestFrontend | None = None
        self.rest_connections: ConnectionGuard | None = None
        #: decodes large REST bodies and encodes large responses away from the loop (see rest.py)
        self.rest_workers = WorkerPool()
        self._grpc: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        self.gc_tuning = GcTuning(busy=lambda: self.manager.in_flight() > 0)
        self.flood_guard = FloodGuard()
        self.rest_port = 0
        self.grpc_port = 0
        #: set when stopping starts: /readyz answers 503 "draining" from then on
        self.draining = False
        #: the default REST port was busy at start (and not asked for): gRPC only
        self._skip_rest = False
        #: labels of the polled config that cannot point at their version yet: (model, label) -> version
        self._deferred_labels: dict[tuple[str, str], int] = {}
        self.monitor.subscribe(self._warn_of_dangling_labels)

    # -- construction helpers --

    def _batching_pool(self, config: ServerConfig) -> BatchingPool | None:
        """The batchers, when batching is asked for (flags, ``mlsrv.toml`` or per-model files)."""
        if not wants_batching(config):
            return None
        choice = BatchingChoice(config, lambda: {m.name: m for m in self._models}, self._version_paths.get)
        metrics = self.metrics
        on_batch_for = None if metrics is None else (lambda o: metrics.batch_callback(o.thread_pool_name))
        return BatchingPool(
            self.executor, choice, on_batch_for=on_batch_for, requests_in_flight=self.requests_in_flight
        )

    def requests_in_flight(self) -> int:
        """Inference requests in the server right now, REST and gRPC (the admission's count)."""
        return self.admission.requests

    def _make_loader(self, servable_id: Any, path: str) -> Loader:
        self._version_paths[servable_id] = path
        loader = self._new_loader(servable_id, path)
        if self.config.per_model_batching:
            loader = BatchingFileCheckedLoader(loader, path)
        if self.metrics is None:
            return loader
        return MeteredLoader(loader, path, on_loop(asyncio.get_running_loop(), self.metrics.record_load))

    def _new_loader(self, servable_id: Any, path: str) -> Loader:
        if self._loader_factory is not None:
            return self._loader_factory(servable_id, path)
        from mlsrv.server import tf_session, tflite

        runtime = self.config.runtime
        warmup = max(1, runtime.warmup_iterations) if runtime.enable_warmup else None
        if runtime.prefer_tflite and tflite.has_tflite_model(path):
            return tflite.TfLiteLoader(path, interpreters=runtime.tflite_interpreters, warmup_iterations=warmup,
                                       warmup_observer=self._warmup_observer())  # fmt: skip
        return tf_session.SavedModelLoader(
            path,
            runtime.saved_model_tags,
            intra_op=runtime.intra_op,
            inter_op=runtime.inter_op,
            gpu_memory_fraction=runtime.gpu_memory_fraction,
            warmup_iterations=warmup,
            warmup_observer=self._warmup_observer(),
        )

    def _warmup_observer(self) -> Callable[[str, str, int], None] | None:
        """Hands warmup timings from the loading thread to the loop, which owns ``Metrics``."""
        if self.metrics is None:
            return None
        return on_loop(asyncio.get_running_loop(), self.metrics.record_warmup)

    # -- lifecycle --

    async def start(self) -> None:
        """Load models (blocking until each settles, as TF Serving), then open the ports."""
        for flag in self.config.unimplemented_flags:
            log.warning("flag --%s is accepted for compatibility but not implemented by mlsrv", flag)
        if self._loader_factory is None:
            from mlsrv.server.tf_startup_log import captured_tensorflow_import

            with captured_tensorflow_import(echo_once=True):  # TF 2.21 prints its start-up lines twice
                from mlsrv.server import tf_runtime

            runtime = self.config.runtime
            tf_runtime.configure(runtime.intra_op, runtime.inter_op, runtime.gpu_memory_fraction)
            from mlsrv.server import op_packages

            op_packages.import_packages(runtime.op_packages)
        try:  # before loading, as TF: only the allow flag lets labels of versions not loaded yet through
            self._apply_labels(self._models)
        except FailedPrecondition as error:
            raise ConfigPreconditionError(
                f"{error.message}. Start with --allow_version_labels_for_unavailable_models to allow labels of "
                "versions that have not loaded yet"
            ) from None
        if self.siblings is None:  # a clash fails now, not after the models load (workers share on purpose)
            self._skip_rest = check_ports(self.config)
        self.request_log.update(self._models)
        if self.config.single_model:  # TF's main.cc line (two spaces included), which scripts wait for
            model = self._models[0]
            log.info("Building single TensorFlow model file config:  model_name: %s model_base_path: %s",
                     model.name, model.base_path)  # fmt: skip
        _log_adding(self._models)
        await self.source.start()
        await self._wait_for_initial_load()
        await self._start_grpc()  # gRPC first, as TF: a failed gRPC bind never leaves REST briefly open
        await self._start_rest()
        self.flood_guard.apply()  # process-wide, like the GC settings: only once the server runs
        if self.siblings is not None:  # now that it serves: until then its siblings count it not ready
            page = self.metrics.render if self.metrics is not None else str
            await self.siblings.start(
                LocalWorker(self._models_not_available, page, self._apply_config, draining=self._draining)
            )
        self.gc_tuning.apply()
        self.monitor.subscribe(self.gc_tuning.on_state)
        if self.config.model_config_file and self.config.lifecycle.model_config_poll_wait_s > 0:
            self._tasks.append(asyncio.create_task(self._poll_model_config()))

    async def _wait_for_initial_load(self) -> None:
        """Block like ServerCore::Create until every model settles; fail only if none is AVAILABLE."""
        names = [model.name for model in self._models]
        if not names:  # an empty config: TF starts and serves nothing ("Taking no action for empty config.")
            log.info("Taking no action for empty config.")
            return
        report = await self.manager.wait_until_settled(names, None)
        if any(_available(self.monitor.states(name)) for name in names):
            for servable_id, error in report.failed:
                log.error("%s failed to load: %s", servable_id, error.message)
            return
        raise UnknownError(report.message())  # TF's load_servables_fast.cc: UNKNOWN, not the load's own code

    def _apply_labels(self, models: tuple[Any, ...]) -> None:
        """Rebuild the label map from ``models`` against what is AVAILABLE now (FailedPrecondition if not)."""
        self.manager.replace_labels(
            {model.name: dict(model.version_labels) for model in models},
            allow_unavailable=self.config.lifecycle.allow_labels_for_unavailable,
        )

    def _draining(self) -> bool:
        """Whether /readyz says "draining": once stopping, unless this is a worker retired alone
        (a rolling restart), whose replacement is ready and answers for the host instead."""
        if not self.draining:
            return False
        return self.siblings is None or self.siblings.listed()

    def _apply_labels_when_possible(self, models: tuple[Any, ...]) -> None:
        """The labels of ``models`` that may point where asked now; the others keep their current
        version (or wait, when new) and are retried on every poll, with one warning each."""
        allow = self.config.lifecycle.allow_labels_for_unavailable
        applicable: dict[str, dict[str, int]] = {}
        deferred: dict[tuple[str, str], int] = {}
        for model in models:
            current = self.manager.labels(model.name)
            kept = applicable.setdefault(model.name, {})
            for label, version in model.version_labels.items():
                try:
                    self.manager.validate_labels(model.name, {label: version}, allow_unavailable=allow)
                    kept[label] = version
                except FailedPrecondition:
                    deferred[(model.name, label)] = version
                    if label in current:
                        kept[label] = current[label]
        self.manager.replace_labels(applicable, allow_unavailable=True)  # each label checked above
        for (name, label), version in deferred.items():
            if self._deferred_labels.get((name, label)) != version:
                log.warning(
                    "Version label %s of model %s is not moved to version %d yet: that version is not available "
                    "for inference. The rest of the config is applied; the label follows once version %d is "
                    "AVAILABLE (--allow_version_labels_for_unavailable_models allows it at once for a new label)",
                    label, name, version, version,
                )  # fmt: skip
        for (name, label), version in self._deferred_labels.items():
            if (name, label) not in deferred and applicable.get(name, {}).get(label) == version:
                log.info("Version label %s of model %s now points to version %d", label, name, version)
        self._deferred_labels = deferred

    def _warn_of_dangling_labels(self, event: StateEvent) -> None:
        """Monitor listener: a version that leaves service while a label points at it, said once."""
        if event.state is not State.END:
            return
        for label, version in self.manager.labels(event.id.name).items():
            if version == event.id.version:
                log.warning(
                    "Version label %s of model %s points to version %d, which is no longer loaded: requests "
                    "for the label fail until the config moves it", label, event.id.name, version,
                )  # fmt: skip

    def _models_not_available(self) -> list[str]:
        """Configured models without an AVAILABLE version (readiness)."""
        return [m.name for m in self._models if not _available(self.monitor.states(m.name))]

    async def _start_rest(self) -> None:
        rest = self.config.rest
        if rest.port == 0 or self._skip_rest:
            return
        siblings = self.siblings
        extra: dict[str, Handler] = health_handlers(
            self._models_not_available,
            siblings.not_ready if siblings is not None else None,
            self._draining,
            lambda: self.source.problems,
        )
        if self.metrics is not None:
            extra[self._metrics_path] = prometheus_handler(self._metrics_page)
        self._rest_frontend = frontend = RestFrontend(
            self.dataplane,
            timeout_s=rest.timeout_s,
            enable_cors=rest.enable_cors,
            model_names=lambda: [m.name for m in self._models],
            extra_routes=extra,
            metrics=self.metrics,
            max_body_bytes=rest.max_body_bytes,
            body_timeout_s=rest.body_timeout_s,
            workers=self.rest_workers,
            admission=self.admission,
            auth=self.auth,
            access_log=self.access_log,
        )
        self._runner = web.ServerRunner(frontend.web_server(), handle_signals=False, shutdown_timeout=SHUTDOWN_GRACE_S)
        await self._runner.setup()
        assert self._runner.server is not None
        loop = asyncio.get_running_loop()
        limits = ConnectionLimits(
            header_timeout_s=rest.header_timeout_s,
            max_connections=rest.max_connections or default_max_connections(),
        )
        # aiohttp's RequestHandler options, as AppRunner would pass them, plus our keep-alive limit
        handler_args: dict[str, Any] = {
            "loop": loop,
            "access_log": None,
            "auto_decompress": False,  # TF's gzip rules: see rest.request_body
            "keepalive_timeout": rest.idle_timeout_s,
        }
        self.rest_connections = ConnectionGuard(self._runner.server, limits, handler_args)
        # the liveness probe, the door's refusals and direct inference calls skip aiohttp's handler
        # unless something must see every response (the access log, CORS headers)
        answers_here = self.access_log is None and not rest.enable_cors
        self.rest_connections.answers_liveness = answers_here
        if answers_here and self._rest_frontend is not None:
            self.rest_connections.door = self._rest_frontend.refusal_at_door
            self.rest_connections.direct = self._rest_frontend.answer_at_connection
        tls = None
        if rest.tls_config_file:
            from mlsrv.ssl_config import rest_ssl_context

            tls = rest_ssl_context(rest.tls_config_file)
        self._rest_tls = tls
        try:
            self._rest_listener = await loop.create_server(
                self.rest_connections,
                rest.host,
                rest.port,
                ssl=tls,
                reuse_address=True,
                reuse_port=self.siblings is not None,  # --workers: every worker listens on the port
                backlog=accept_backlog(limits.max_connections),
            )
        except (OSError, OverflowError) as error:
            reason = getattr(error, "strerror", None) or error
            raise ConfigError(f"cannot serve REST on {rest.host}:{rest.port}: {reason}") from None
        widen_listen_queue(self._rest_listener)
        self.rest_connections.listen_on(self._rest_listener, tls, accept_backlog(limits.max_connections))
        sockets = self._rest_listener.sockets
        self.rest_port = int(sockets[0].getsockname()[1]) if sockets else 0
        log.info("Exporting HTTP/REST API at:localhost:%d ...", self.rest_port)  # TF's words, whatever the host
        if tls is not None:
            checked = tls.verify_mode == ssl.CERT_REQUIRED
            log.info("REST serves HTTPS (TLS 1.2+)%s", ", client certificates required" if checked else "")
        elif self.config.grpc.ssl_config_file:
            log.warning("REST serves plain text beside a gRPC port with TLS (--rest_tls=on for HTTPS)")

    async def _start_grpc(self) -> None:
        try:
            from mlsrv.server.grpc import GrpcFrontend
        except ImportError:  # gRPC frontend not built yet
            return
        grpc_config = self.config.grpc
        # grpc shares a port with any process by default (SO_REUSEPORT): only --workers share it, on purpose
        reuse = ("grpc.so_reuseport", 1 if self.siblings is not None else 0)
        if all(name != "grpc.so_reuseport" for name, _ in grpc_config.channel_arguments):  # a user's choice wins
            grpc_config = replace(grpc_config, channel_arguments=(*grpc_config.channel_arguments, reuse))
        self._grpc = GrpcFrontend(
            self.dataplane,
            grpc_config,
            server=self,
            metrics=self.metrics,
            admission=self.admission,
            auth=self.auth,
            access_log=self.access_log,
        )
        self.grpc_port = await self._grpc.start()

    async def reload_config(self, config: Any) -> None:
        """``HandleReloadConfigRequest``: this server's models, and with ``--workers`` every worker's.

        Workers take one reload at a time; a failure here changes nothing elsewhere; a failure on a
        sibling is the RPC's error (this worker has the new config then, as TF would after a partial load).
        """
        models = models_from_proto(config, validate=False)
        if self.siblings is None:
            await self.reload_models(models)
            return
        async with self.siblings.reload_lock():
            await self.reload_models(models)
            await self.siblings.reload_others(config.SerializeToString())

    async def _apply_config(self, serialized: bytes) -> None:
        """A sibling's reload, applied here only (the sibling holds the lock and tells the others)."""
        await self.reload_models(models_from_proto(parse_model_server_config_bytes(serialized), validate=False))

    async def _metrics_page(self) -> str:
        """The Prometheus page: this server's, or with ``--workers`` the sum over every worker."""
        assert self.metrics is not None
        page = self.metrics.render()
        if self.siblings is None:
            return page
        return sum_pages([page, *await self.siblings.metrics_pages()])

    async def reload_models(self, models: tuple[Any, ...], *, defer_labels: bool = False) -> None:
        """Replace the model list (config reload) as TF's ``ServerCore::ReloadConfig`` does.

        Checks in TF's order (unique names, absolute paths, platform changes, then the label map,
        rebuilt against what is AVAILABLE now, then unsupported platforms), so a bad config changes
        nothing; then models are added and removed, and the call blocks until the *newly added*
        models settle. ``defer_labels`` (a polled config file): a label that cannot point at its
        version yet does not hold back the rest of the change; it is applied once it can be.
        """
        validate_models(models, check_platforms=False)
        check_no_platform_changes(self._models, models)
        if defer_labels:
            self._apply_labels_when_possible(models)
        else:
            self._apply_labels(models)
        check_platforms_supported(models)
        self.request_log.update(models)
        previous = {model.name for model in self._models}
        _log_adding(models)
        self._models = models
        await self.source.set_models(models)
        report = await self.manager.wait_until_settled([m.name for m in models if m.name not in previous], None)
        if report.failed:
            raise UnknownError(report.message("model"))
        log.info("Model config applied: serving %s", ", ".join(m.name for m in models) or "no model")

    async def _poll_model_config(self) -> None:
        """TF's ``PollFilesystemAndReloadConfig``, safe against files caught mid-write.

        Only a file that reads whole and parses replaces the serving config: one that cannot be
        read or parsed, one that changed while it was read, and an empty one (TF: "Taking no action
        for empty config.") leave it as it is. A file cut exactly between two ``config`` entries
        parses, so writers should still replace the file atomically (write, then rename).
        """
        period = self.config.lifecycle.model_config_poll_wait_s
        path = self.config.model_config_file
        while True:
            await asyncio.sleep(period)
            try:
                models = await asyncio.to_thread(read_polled_model_config, path)
            except ConfigError as error:
                log.error("Failed to read ModelServerConfig file: %s", error.message)
                continue
            if models is None:
                continue
            try:
                if models != self._models:
                    await self.reload_models(models, defer_labels=True)
                elif self._deferred_labels:
                    self._apply_labels_when_possible(self._models)
            except MlsrvError as error:
                log.error("PollFilesystemAndReloadConfig failed to ReloadConfig: %s", error.message)

    async def stop(self, grace_s: float = SHUTDOWN_GRACE_S) -> None:
        """Drain, then unload: both ports stop accepting at once, the calls in flight on either
        frontend finish (within ``grace_s``), and only then are batchers and models stopped."""
        self.draining = True  # /readyz says so from now on, while everything is still served
        if self.config.drain_delay_s > 0 and self._runner is not None:
            log.info("draining: not ready; serving on for %.1f s (--drain_delay_seconds)", self.config.drain_delay_s)
            await asyncio.sleep(self.config.drain_delay_s)
        self.gc_tuning.restore()  # first: unloads below need no re-freeze, and their cycles must be collectable
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.source.stop()
        await self._drain(grace_s)
        if self.siblings is not None:  # after the drain: until then siblings asking get an answer (a
            await self.siblings.stop()  # listed worker's is "draining", a retired one's its readiness)
        if self.batching is not None:
            await self.batching.stop()
        await self.manager.stop()
        await asyncio.to_thread(self.request_log.close)  # what was sampled before the stop is written
        if self.access_log is not None:
            await asyncio.to_thread(self.access_log.close)
        self.executor.shutdown(wait=False, cancel_futures=True)
        self._load_executor.shutdown(wait=False, cancel_futures=True)
        self.rest_workers.stop()
        self.flood_guard.restore()

    async def _drain(self, grace_s: float) -> None:
        """Both frontends at once: stop taking work, finish what is in flight, within ``grace_s``.

        With traffic in the last second, both keep serving for :data:`DRAIN_PICKUP_S` first (gRPC
        health already NOT_SERVING): grpc.aio picks up one call per loop iteration and the accept
        backlog holds connections the kernel took, so requests a client sent just before SIGTERM
        may still be queued, and a stopped server would cancel or reset them.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        if self._grpc is not None:
            await self._grpc.enter_drain()
        latest = max(self._grpc.last_call_at if self._grpc is not None else float("-inf"),
                     self._rest_frontend.last_request_at if self._rest_frontend is not None else float("-inf"))
        if time.monotonic() - latest < 1.0:
            await asyncio.sleep(min(DRAIN_PICKUP_S, grace_s))
        guard = self.rest_connections
        if self._rest_listener is not None and guard is not None:  # made together in _start_rest
            guard.stop_accepting()  # its duplicates of the listening sockets would keep them open
            queued = await close_listener_serving_its_queue(
                self._rest_listener, guard, self._rest_tls, settle_s=HANDSHAKE_SETTLE_S
            )
            if queued:
                log.info("draining: serving %d connections that were waiting to be accepted", queued)
            # a connection accepted but silent yet is a client about to send its request (it connected
            # before the stop): closing it now would lose that request, so it gets a moment to send
            until = min(deadline, loop.time() + NEW_CONNECTION_GRACE_S)
            while guard.silent and loop.time() < until:
                await asyncio.sleep(0.01)
        await asyncio.gather(self._stop_grpc(max(0.0, deadline - loop.time())), self._stop_rest())

    async def _stop_grpc(self, grace_s: float) -> None:
        if self._grpc is not None:
            await self._grpc.stop(grace_s)

    async def _stop_rest(self) -> None:
        """Idle connections close at once; requests being served get the runner's shutdown grace."""
        if self._runner is not None:
            await self._runner.cleanup()
        if self._rest_listener is not None:
            await self._rest_listener.wait_closed()

    async def __aenter__(self) -> Server:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def run(self) -> None:
        """Serve until SIGTERM or SIGINT, then shut down cleanly.

        A signal during start-up (a load that retries for minutes, a base path that never appears)
        cancels the start, which stops what was started: the process never needs ``kill -9``.
        """
        loop = asyncio.get_running_loop()
        stopping = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        starting = asyncio.ensure_future(self.__aenter__())
        signalled = asyncio.ensure_future(stopping.wait())
        await asyncio.wait({starting, signalled}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            log.info("signal received during start-up; stopping")
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
            return
        signalled.cancel()
        starting.result()  # a failed start raises here (it has already stopped itself)
        self.rest_workers.start()  # now, in the background, rather than on the first large body
        try:
            log.info("mlsrv serving %s", ", ".join(m.name for m in self._models))
            await stopping.wait()
            log.info("shutting down")
        finally:
            await self.__aexit__(None, None, None)


class GcTuning:
    """The one place mlsrv tunes CPython's cyclic garbage collector, for serving large JSON requests.

    Why: in a process that has imported TensorFlow (~290k GC-tracked objects), a 1x224x224x3 REST
    request parses into ~50k lists. With the default thresholds (700, 10, 10) they set off ~70 young
    collections while still in use, get promoted, and so a full collection over every TF object
    (~220 ms here) ran on about every second request: REST predict took ~200 ms instead of ~35 ms
    (``hey``, concurrency 1). Applied once the models are loaded and the ports are open:

    - young threshold :data:`GC_YOUNG_THRESHOLD` (old generations keep theirs): a request's
      containers are freed by reference counting when it ends, before a collection sees them. Only
      cyclic garbage waits longer, and at most that many objects of it;
    - ``gc.freeze()``: start-up objects (TF, the models, the server) leave the collector's view, so
      the full collections that still happen cost milliseconds. No ``gc.collect()`` first: loading
      leaves only a few hundred garbage objects (measured), not worth a full pass per start.

    Frozen objects are never collected, so when a version ends while serving, the listener
    re-freezes (unfreeze, collect, freeze): the unloaded model's reference cycles are freed, and the
    objects of versions loaded since start-up get frozen too. That full collection stalls every
    thread for ~130-220 ms (CPython's collector holds the GIL: measured the same from a worker thread
    as on the loop), so it is not run at once: it waits for a moment with no request in flight
    (checked every :data:`REFREEZE_POLL_S`), and runs anyway after :data:`REFREEZE_MAX_WAIT_S` of
    uninterrupted traffic, so memory of unloaded versions is always returned. GC settings are process-wide:
    :meth:`restore` (first thing in ``Server.stop``) puts back the thresholds found and unfreezes,
    unless something else had frozen objects before :meth:`apply`.
    """

    def __init__(self, busy: Callable[[], bool] = lambda: False) -> None:
        """``busy`` says whether requests are in flight now (the Manager's count)."""
        self._saved_threshold: tuple[int, int, int] | None = None
        self._unfreeze_on_restore = False
        self._busy = busy
        self._refreeze: asyncio.Task[None] | None = None

    @property
    def active(self) -> bool:
        return self._saved_threshold is not None

    def apply(self) -> None:
        if self.active:
            return
        self._saved_threshold = gc.get_threshold()
        self._unfreeze_on_restore = gc.get_freeze_count() == 0
        _, old, oldest = self._saved_threshold
        gc.set_threshold(GC_YOUNG_THRESHOLD, old, oldest)
        gc.freeze()

    def on_state(self, event: StateEvent) -> None:
        """Monitor listener: re-freeze after a version ends (unloaded or failed) while serving."""
        if self.active and event.state is State.END and self._refreeze is None:
            self._refreeze = asyncio.get_running_loop().create_task(self._refreeze_when_idle())

    async def _refreeze_when_idle(self) -> None:
        try:
            loop = asyncio.get_running_loop()
            give_up = loop.time() + REFREEZE_MAX_WAIT_S
            while self._busy() and loop.time() < give_up:
                await asyncio.sleep(REFREEZE_POLL_S)
            if self.active:
                gc.unfreeze()
                gc.collect()
                gc.freeze()
        finally:
            self._refreeze = None

    def restore(self) -> None:
        if self._refreeze is not None:
            self._refreeze.cancel()
            self._refreeze = None
        if self._saved_threshold is None:
            return
        gc.set_threshold(*self._saved_threshold)
        if self._unfreeze_on_restore:
            gc.unfreeze()
        self._saved_threshold = None


def _log_adding(models: tuple[Any, ...]) -> None:
    """TF's ``ServerCore::AddModelsViaModelConfigList`` lines, at start and on every config change."""
    log.info("Adding/updating models.")
    for model in models:
        log.info("(Re-)adding model: %s", model.name)


def _monitoring(config: ServerConfig) -> tuple[Metrics | None, str]:
    """Metrics and the page's path when Prometheus is enabled; TF reads the file only when REST is on."""
    if not config.monitoring_config_file or config.rest.port == 0:
        return None, ""
    settings = load_monitoring_config(config.monitoring_config_file)
    return (Metrics(), settings.path) if settings.enabled else (None, "")


def _available(status: ModelStatus) -> bool:
    return any(v.state is State.AVAILABLE for v in status.versions)


def read_polled_model_config(path: str) -> tuple[Any, ...] | None:
    """The models of a polled config file, or None when the file must be ignored this round.

    None for an empty config (TF: "Taking no action for empty config."; a file that sets an empty
    ``model_config_list`` still unloads everything, as in TF) and for a file whose size or
    modification time changed while it was read (a writer is still at it: the next poll sees the
    finished file). Raises ConfigError for a file that cannot be read or does not parse.
    """
    try:
        before = os.stat(path)
        with open(path, encoding="utf-8") as file:
            text = file.read()
        after = os.stat(path)
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: {getattr(error, 'strerror', None) or error}") from None
    if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns):
        log.warning("%s changed while it was read; keeping the current model config until the next poll", path)
        return None
    message = parse_model_server_config(text, source=path)
    if message.WhichOneof("config") is None:
        log.info("Taking no action for empty config.")
        return None
    return models_from_proto(message, validate=False)


def _access_log(config: ServerConfig) -> AccessLog | None:
    """The access log of ``--access_log`` (opened now: a path that cannot be written fails start-up)."""
    if not config.access_log:
        return None
    try:
        return AccessLog(config.access_log, config.access_log_format)
    except OSError as error:
        raise ConfigError(f"--access_log {config.access_log}: {error.strerror or error}") from None


def _authenticator(config: ServerConfig, metrics_path: str | None) -> Authenticator | None:
    """Bearer-token checks when ``--auth_token_file`` is given (``server/auth.py``), else None."""
    if not config.auth_token_file:
        return None
    admin = TokenFile(config.admin_token_file) if config.admin_token_file else None
    log.info("REST and gRPC calls need a bearer token (--auth_token_file); probes stay open")
    return Authenticator(TokenFile(config.auth_token_file), admin, metrics_path if config.auth_open_metrics else None)

