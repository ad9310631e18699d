"""Version discovery: which versions each model should serve, read from its base path on disk.

TF Serving's ``FileSystemStoragePathSource``: every poll lists the numeric children of each model's
``base_path``, applies the model's version policy and hands the result to the manager as the
complete aspired set. Like TF it remembers nothing of what it sent before, so a version directory
that disappears is unloaded and a new higher one is loaded. Directory listing runs in a worker
thread so the event loop never blocks on the filesystem.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Final, Protocol

from mlsrv.config import All, Latest, ModelConfig, Specific, VersionPolicy
from mlsrv.server.remote_storage import RemoteStorage, RemoteStorageError, default_cache_dir, is_remote

log = logging.getLogger(__name__)

_INT64: Final = re.compile(r"[+-]?[0-9]+")
_ASCII_SPACE: Final = " \t\n\v\f\r"
_MODEL_FILES: Final = ("saved_model.pb", "saved_model.pbtxt", "model.tflite")
#: a base path that cannot be read is logged on every poll, at most this often (TF: every poll)
REPEAT_ERROR_S: Final = 30.0


class AspiredSink(Protocol):
    """Where a source sends aspired versions (the Manager, or a fake in tests)."""

    def set_aspired(self, name: str, versions: Mapping[int, str]) -> None: ...


class _Warn(Protocol):
    def __call__(self, message: str) -> None: ...


def _status_text(base: str, error: OSError) -> str:
    """TF's status for a base path it cannot list: ``NOT_FOUND: /typo not found`` and the like."""
    if isinstance(error, FileNotFoundError):
        return f"NOT_FOUND: {base} not found"
    if isinstance(error, PermissionError):
        return f"PERMISSION_DENIED: {base}: {error.strerror}"
    if isinstance(error, NotADirectoryError):
        return f"FAILED_PRECONDITION: {base} is not a directory"
    return f"UNKNOWN: {base}: {error.strerror or error}"


def parse_version(name: str) -> int | None:
    """``absl::SimpleAtoi`` into int64: optional sign, ASCII digits, surrounding whitespace allowed."""
    text = name.strip(_ASCII_SPACE)
    if not _INT64.fullmatch(text):
        return None
    value = int(text)
    return value if -(2**63) <= value < 2**63 else None


def scan_versions(base_path: str, policy: VersionPolicy, *, warned: set[str] | None = None) -> dict[int, str]:
    """The versions ``policy`` selects under ``base_path``, as version -> directory path.

    Blocking (lists a directory); raises OSError when ``base_path`` cannot be listed. A child counts
    by its name alone, as in TF Serving; a selected one without ``saved_model.pb`` is warned about.
    ``warned`` de-duplicates warnings across polls.
    """
    warn = _warner(warned)
    with os.scandir(base_path) as entries:
        children = [(entry.name, os.path.join(base_path, entry.name)) for entry in entries]
    selected = _select(_numbered(children, warn), policy, base_path, warn)
    for path in selected.values():
        if not any(os.path.exists(os.path.join(path, f)) for f in _MODEL_FILES):
            warn(f"Version directory {path} contains no saved_model.pb; its load will fail")
    return selected


def scan_remote(
    remote: RemoteStorage, base_path: str, policy: VersionPolicy, *, warned: set[str] | None = None
) -> dict[int, str]:
    """:func:`scan_versions` for an object-store base path: listed there, selected by ``policy``, the
    selected versions downloaded into the local cache; version -> local folder. Blocking."""
    warn = _warner(warned)
    listed = _numbered(remote.list_folders(base_path).items(), warn)
    return remote.fetch(base_path, _select(listed, policy, base_path, warn), listed)


def _warner(warned: set[str] | None) -> _Warn:
    """``log.warning``, once per message when ``warned`` remembers them across polls."""

    def warn(message: str) -> None:
        if warned is None or message not in warned:
            log.warning("%s", message)
            if warned is not None:
                warned.add(message)

    return warn


def _numbered(children: Iterable[tuple[str, str]], warn: _Warn) -> dict[int, str]:
    """Version -> path of the children (name, path) whose names are versions; a duplicate is warned about."""
    found: dict[int, str] = {}
    for name, path in sorted(children):
        version = parse_version(name)
        if version is None:
            continue
        if version in found:
            warn(
                f"Duplicate version directories detected. Version {version} will be loaded from {path}, "
                f"{found[version]} will be ignored."
            )
        found[version] = path
    return found


def _select(found: dict[int, str], policy: VersionPolicy, base_path: str, warn: _Warn) -> dict[int, str]:
    if isinstance(policy, All):
        return dict(sorted(found.items()))
    if isinstance(policy, Specific):
        for missing in sorted(set(policy.versions) - found.keys()):
            warn(f"Version {missing} requested by the specific version policy was not found under {base_path}")
        return {v: found[v] for v in sorted(set(policy.versions) & found.keys())}
    assert isinstance(policy, Latest)
    keep = sorted(found, reverse=True)[: max(1, policy.num_versions)]
    return {v: found[v] for v in sorted(keep)}


class FileSystemSource:
    """Polls every model's base path and sends the aspired versions to ``sink``. Loop-thread only.

    ``poll_seconds`` > 0 re-scans at that period after ``start()``; 0 or less scans once at start
    (and again for models added or changed by ``set_models``). A missing base path is logged and
    retried on the next poll without affecting other models (TF Serving fails the whole poll).
    """

    def __init__(
        self,
        models: Sequence[ModelConfig],
        sink: AspiredSink,
        poll_seconds: float = 1.0,
        remote: RemoteStorage | None = None,
        remote_poll_seconds: float = 0.0,
    ) -> None:
        """``remote`` serves ``s3://``, ``gs://`` and ``az://`` base paths (None: a default cache).

        An object store bills and throttles listings, so a remote base path is listed at most every
        ``remote_poll_seconds`` (``--remote_poll_wait_seconds``; polls in between skip it).
        """
        self._remote = remote
        self._remote_poll_seconds = remote_poll_seconds
        self._listed_at: dict[str, float] = {}
        self._models = {m.name: m for m in models}
        self._sink = sink
        self._poll_seconds = poll_seconds
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._warned: set[str] = set()
        #: model -> when its base path error was last logged (logged again every REPEAT_ERROR_S)
        self._failing: dict[str, float] = {}
        #: model -> why its versions cannot be read now (a missing base path): /readyz shows it
        self.problems: dict[str, str] = {}
        self._empty: set[str] = set()

    async def start(self) -> None:
        """Scan every model once (returns when the manager has the aspired sets), then start polling."""
        await self.poll()
        if self._poll_seconds > 0 and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="filesystem-source")

    async def poll(self) -> None:
        """One scan of every configured model."""
        async with self._lock:
            now = time.monotonic()
            for model in list(self._models.values()):
                listed_ago = now - self._listed_at.get(model.name, -math.inf)
                if is_remote(model.base_path) and listed_ago < self._remote_poll_seconds:
                    continue
                await self._scan(model)

    async def set_models(self, models: Sequence[ModelConfig]) -> None:
        """Replace the configuration: removed models are unaspired, new or changed ones scanned now."""
        async with self._lock:
            new = {m.name: m for m in models}
            for name in self._models.keys() - new.keys():
                self._failing.pop(name, None)
                self.problems.pop(name, None)
                self._empty.discard(name)
                self._sink.set_aspired(name, {})
            changed = [m for m in new.values() if self._models.get(m.name) != m]
            self._models = new
            for model in changed:
                await self._scan(model)

    async def stop(self) -> None:
        """Stop polling (aspired versions are left as they are; the manager unloads on its own stop)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _remote_storage(self) -> RemoteStorage:
        if self._remote is None:
            self._remote = RemoteStorage(default_cache_dir())
        return self._remote

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._poll_seconds)
            try:
                await self.poll()
            except Exception:  # never let one bad poll end polling
                log.exception("File system poll failed")

    async def _scan(self, model: ModelConfig) -> None:
        name, base = model.name, model.base_path
        try:
            if is_remote(base):
                self._listed_at[name] = time.monotonic()
                versions = await asyncio.to_thread(
                    scan_remote, self._remote_storage(), base, model.version_policy, warned=self._warned
                )
            else:
                versions = await asyncio.to_thread(scan_versions, base, model.version_policy, warned=self._warned)
        except RemoteStorageError as exc:  # keep what is loaded; the next poll tries again
            log.error("Cannot read %s for servable %s; keeping its current versions: %s", base, name, exc)
            return
        except OSError as exc:
            problem = f"Could not find base path {base} for servable {name} with error {_status_text(base, exc)}"
            self.problems[name] = problem
            now = time.monotonic()
            if now - self._failing.get(name, -math.inf) >= REPEAT_ERROR_S:  # TF says it every poll: rate-limited
                self._failing[name] = now
                log.error("FileSystemStoragePathSource encountered a filesystem access error: %s", problem)
            return
        self._failing.pop(name, None)
        self.problems.pop(name, None)
        if not versions and name not in self._empty:
            log.warning(
                "No versions of servable %s found under base path %s. "
                "Did you forget to name your leaf directory as a number (eg. '/1/')?",
                name,
                base,
            )
        if versions:
            self._empty.discard(name)
        else:
            self._empty.add(name)
        self._sink.set_aspired(name, versions)
