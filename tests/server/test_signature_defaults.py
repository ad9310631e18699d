"""Signature ``defaults``: Predict may leave such inputs out and the server fills them in (as TF Serving)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from mlsrv.errors import InvalidArgument
from mlsrv.protocol.types import DEFAULT_SIGNATURE, ModelSpec, PredictRequest, SignatureInfo, TensorInfo
from tests.fakes import FakeLoaderFactory, FakeServable
from tests.server.harness import running_server
from tests.server.test_rest_fake import model_dir

WITH_DEFAULT = {
    DEFAULT_SIGNATURE: SignatureInfo(
        inputs={"x": TensorInfo("x:0", "DT_FLOAT", (-1, 1))},
        outputs={"y": TensorInfo("y:0", "DT_FLOAT", (-1, 1))},
        defaults={"x": np.array([[4.0]], np.float32)},
    )
}


def test_missing_input_with_default_is_filled(tmp_path: Path) -> None:
    factory = FakeLoaderFactory(servable_for=lambda _id: FakeServable(signatures=WITH_DEFAULT))

    async def main() -> None:
        async with running_server(loader_factory=factory, model_name="m",
                                  model_base_path=str(model_dir(tmp_path, 1))) as s:
            plane = s.server.dataplane
            filled = await plane.predict(PredictRequest(ModelSpec("m"), {}))
            assert filled.outputs["y"].tolist() == [[4.0]]
            given = await plane.predict(PredictRequest(ModelSpec("m"), {"x": np.array([[2.0]], np.float32)}))
            assert given.outputs["y"].tolist() == [[3.0]]
            with pytest.raises(InvalidArgument, match="input size does not match signature: 2!=1"):
                await plane.predict(PredictRequest(ModelSpec("m"), {"x": np.ones((1, 1), np.float32),
                                                                     "z": np.ones((1, 1), np.float32)}))

    asyncio.run(main())


def test_missing_input_without_default_is_an_error(tmp_path: Path) -> None:
    async def main() -> None:
        async with running_server(loader_factory=FakeLoaderFactory(), model_name="m",
                                  model_base_path=str(model_dir(tmp_path, 1))) as s:
            with pytest.raises(InvalidArgument, match=r"Missing but required: \{x\}\."):
                await s.server.dataplane.predict(PredictRequest(ModelSpec("m"), {}))

    asyncio.run(main())
