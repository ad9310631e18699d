"""The seams between the lifecycle and the runtime: ``Servable`` (what serves requests) and ``Loader``.

A Servable is one loaded model version. ``run`` is blocking and is called on the Server's executor,
never on the event loop. Loaders build Servables; ``tf_runtime`` has the TensorFlow one and tests
use fakes, so the lifecycle and the DataPlane are testable without TensorFlow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np

from mlsrv.protocol.types import SignatureInfo


class Servable(Protocol):
    """One loaded model version."""

    def signatures(self) -> Mapping[str, SignatureInfo]:
        """Every SignatureDef, including ``__saved_model_init_op`` where the SavedModel has it."""
        ...

    def run(
        self, signature: str, inputs: Mapping[str, np.ndarray], output_filter: Sequence[str] = ()
    ) -> dict[str, np.ndarray]:
        """Run one signature on already validated inputs. Blocking; raises MlsrvError on model errors.

        An empty ``output_filter`` returns every output of the signature.
        """
        ...


class Loader(Protocol):
    """Loads one version. ``load`` is blocking (run on the executor) and raises on failure."""

    def load(self) -> Servable: ...

    def unload(self) -> None: ...
