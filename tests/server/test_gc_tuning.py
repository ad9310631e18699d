"""GC tuning for large REST requests (``app.GcTuning``) and the REST handler's release of parsed bodies.

Timing is not asserted here; these check the behaviour that makes large requests cheap: the
thresholds and freeze are applied once models are loaded and put back on stop, frozen start-up
models can still be collected once unloaded, and a parsed JSON document is gone before the model runs.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mlsrv.protocol.types import State
from mlsrv.server.app import GC_YOUNG_THRESHOLD
from mlsrv.server.ids import ServableId
from tests.fakes import FakeLoaderFactory, FakeServable
from tests.server.harness import running_server


def version(base: Path, number: int) -> None:
    (base / str(number)).mkdir(parents=True, exist_ok=True)
    (base / str(number) / "saved_model.pb").write_bytes(b"")


def test_start_tunes_the_collector_and_stop_puts_it_back(tmp_path: Path) -> None:
    version(tmp_path / "m", 1)
    before, frozen_before = gc.get_threshold(), gc.get_freeze_count()

    async def main() -> None:
        async with running_server(loader_factory=FakeLoaderFactory(), model_name="m",
                                  model_base_path=str(tmp_path / "m")) as s:
            assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *before[1:])
            assert gc.get_freeze_count() > frozen_before
            status, body = await s.post("/v1/models/m:predict", {"instances": [[1.0]]})
            assert (status, body) == (200, {"predictions": [[2.5]]})

    asyncio.run(main())
    assert gc.get_threshold() == before
    if frozen_before == 0:
        assert gc.get_freeze_count() == 0


class _CyclicServable(FakeServable):
    """Holds a reference cycle, as a TF graph does, so only the cyclic collector can free it."""

    def __init__(self) -> None:
        super().__init__()
        self.cycle = self


class _Loader:
    """Keeps its servable until ``unload``, then drops it (as the TF loader closes its Session)."""

    def __init__(self, loaded: list[weakref.ref[_CyclicServable]]) -> None:
        self._loaded = loaded
        self._servable: _CyclicServable | None = None

    def load(self) -> _CyclicServable:
        self._servable = _CyclicServable()
        self._loaded.append(weakref.ref(self._servable))
        return self._servable

    def unload(self) -> None:
        self._servable = None


def test_a_version_loaded_before_the_freeze_is_collected_after_unload(tmp_path: Path) -> None:
    base = tmp_path / "m"
    version(base, 1)
    loaded: list[weakref.ref[_CyclicServable]] = []

    def factory(_id: ServableId, _path: str) -> _Loader:
        return _Loader(loaded)

    async def main() -> None:
        async with running_server(loader_factory=factory, model_name="m", model_base_path=str(base)) as s:
            assert len(loaded) == 1 and loaded[0]() is not None  # frozen with the rest at start-up
            version(base, 2)
            await s.server.source.poll()
            assert await s.server.monitor.wait_until("m", [1], {State.END}, 10.0)
            for _ in range(100):  # the re-freeze waits for a moment without requests: here, at once
                if loaded[0]() is None:
                    break
                await asyncio.sleep(0.05)
            assert loaded[0]() is None

    asyncio.run(main())


class _DocWatcher(FakeServable):
    """Records, while the model runs, whether the request's parsed JSON lists are still alive."""

    MARK = 1234.5678

    def __init__(self) -> None:
        super().__init__()
        self.alive_during_run: list[bool] = []

    def run(
        self, signature: str, inputs: Mapping[str, np.ndarray], output_filter: Sequence[str] = ()
    ) -> dict[str, np.ndarray]:
        mark: list[Any] = [self.MARK]
        self.alive_during_run.append(any(type(o) is list and o == mark and o is not mark for o in gc.get_objects()))
        return super().run(signature, inputs, output_filter)


def test_the_parsed_body_is_released_before_the_model_runs(tmp_path: Path) -> None:
    version(tmp_path / "m", 1)
    watcher = _DocWatcher()

    async def main() -> None:
        async with running_server(loader_factory=FakeLoaderFactory(servable=watcher), model_name="m",
                                  model_base_path=str(tmp_path / "m")) as s:
            raw = b'{"instances": [[1234.5678]]}'  # bytes, so the test itself holds no such list
            status, body = await s.post("/v1/models/m:predict", raw=raw)
            assert status == 200
            status, body = await s.post("/v1/models/m:predict", raw=b'{"inputs": [[1234.5678]]}')
            assert status == 200

    asyncio.run(main())
    assert watcher.alive_during_run == [False, False]
