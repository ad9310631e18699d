"""Test doubles for the lifecycle and the DataPlane: a numpy half_plus_two servable and its loader.

``FakeServable`` computes ``y = slope * x + offset`` (0.5x + 2 by default, like TF Serving's
half_plus_two) and exposes the same ``serving_default`` signature (``x`` [-1, 1] float -> ``y``
[-1, 1] float). ``FakeLoader`` can be slow, fail a number of times, or block on a gate, so tests can
observe every lifecycle state without TensorFlow. Loads and runs happen on executor threads, so the
counters are guarded by a lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import numpy as np

from mlsrv.errors import LoadError
from mlsrv.protocol.types import DEFAULT_SIGNATURE, SignatureInfo, TensorInfo
from mlsrv.server.ids import ServableId

HALF_PLUS_TWO_SIGNATURES: Mapping[str, SignatureInfo] = MappingProxyType(
    {
        DEFAULT_SIGNATURE: SignatureInfo(
            inputs={"x": TensorInfo("x:0", "DT_FLOAT", (-1, 1))},
            outputs={"y": TensorInfo("y:0", "DT_FLOAT", (-1, 1))},
        )
    }
)


class FakeServable:
    """``y = slope * x + offset`` in numpy. ``delay`` sleeps per run; ``error`` is raised by every run."""

    def __init__(
        self,
        *,
        slope: float = 0.5,
        offset: float = 2.0,
        delay: float = 0.0,
        error: Exception | None = None,
        signatures: Mapping[str, SignatureInfo] = HALF_PLUS_TWO_SIGNATURES,
    ) -> None:
        self.slope = slope
        self.offset = offset
        self.delay = delay
        self.error = error
        self._signatures = signatures
        self._lock = threading.Lock()
        self.batch_sizes: list[int] = []  # rows per run call, in call order

    def signatures(self) -> Mapping[str, SignatureInfo]:
        return self._signatures

    def run(
        self, signature: str, inputs: Mapping[str, np.ndarray], output_filter: Sequence[str] = ()
    ) -> dict[str, np.ndarray]:
        x = np.asarray(inputs["x"], dtype=np.float32)
        with self._lock:
            self.batch_sizes.append(int(x.shape[0]) if x.ndim else 1)
        if self.delay:
            time.sleep(self.delay)
        if self.error is not None:
            raise self.error
        outputs = {"y": (x * np.float32(self.slope) + np.float32(self.offset)).astype(np.float32)}
        return {k: v for k, v in outputs.items() if not output_filter or k in output_filter}


class FakeLoader:
    """A Loader whose ``load`` fails ``fail_times`` times (or always), after ``delay`` seconds each.

    ``gate``, when given, makes each load attempt block until it is set. ``attempted`` is set after
    every attempt (successful or not), so tests can wait for the first failure without sleeping.
    """

    def __init__(
        self,
        *,
        delay: float = 0.0,
        fail_times: int = 0,
        always_fail: bool = False,
        error: Exception | None = None,
        gate: threading.Event | None = None,
        servable: FakeServable | None = None,
        id: ServableId | None = None,
        path: str = "",
    ) -> None:
        self.delay = delay
        self.fail_times = fail_times
        self.always_fail = always_fail
        self.error = error
        self.gate = gate
        self.servable = servable if servable is not None else FakeServable()
        self.id = id
        self.path = path
        self.attempted = threading.Event()
        self._lock = threading.Lock()
        self.load_attempts = 0
        self.unload_calls = 0

    def load(self) -> FakeServable:
        if self.gate is not None:
            self.gate.wait(10)
        if self.delay:
            time.sleep(self.delay)
        with self._lock:
            self.load_attempts += 1
            attempt = self.load_attempts
        try:
            if self.always_fail or attempt <= self.fail_times:
                raise self.error if self.error is not None else LoadError(f"fake load failure {attempt}")
            return self.servable
        finally:
            self.attempted.set()

    def unload(self) -> None:
        with self._lock:
            self.unload_calls += 1


class FakeLoaderFactory:
    """``(ServableId, path) -> FakeLoader`` for the Manager; per-version options override the defaults.

    ``options`` maps ``(name, version)`` (or just ``name``) to FakeLoader keyword arguments. Every
    loader built is kept in ``loaders`` (the latest one per id) so tests can inspect it.
    """

    def __init__(
        self,
        options: Mapping[tuple[str, int] | str, Mapping[str, Any]] | None = None,
        *,
        servable_for: Callable[[ServableId], FakeServable] | None = None,
        **defaults: Any,
    ) -> None:
        self.options = dict(options or {})
        self.servable_for = servable_for
        self.defaults = defaults
        self.loaders: dict[ServableId, FakeLoader] = {}

    def __call__(self, id: ServableId, path: str) -> FakeLoader:
        kwargs = {**self.defaults, **self.options.get(id.name, {}), **self.options.get((id.name, id.version), {})}
        if self.servable_for is not None and "servable" not in kwargs:
            kwargs["servable"] = self.servable_for(id)
        loader = FakeLoader(id=id, path=path, **kwargs)
        self.loaders[id] = loader
        return loader
