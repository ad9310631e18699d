"""The seams between the lifecycle and the runtime: ``Servable`` (what serves requests) and ``Loader``.

A Servable is one loaded model version. ``run`` is blocking and is called on the Server's executor,
never on the event loop. Loaders build Servables; ``tf_runtime`` has the TensorFlow one and tests
use fakes, so the lifecycle and the DataPlane are testable without TensorFlow.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

import numpy as np

from mlsrv.errors import InvalidArgument
from mlsrv.protocol.types import INIT_OP_SIGNATURE, SignatureInfo


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


def checked_outputs(
    signature: str, info: SignatureInfo | None, inputs: Iterable[str], output_filter: Sequence[str]
) -> tuple[str, ...]:
    """TF Serving's alias checks of one run, shared by every runtime (Session, tf.function, TF Lite):
    the signature exists, each input and output alias belongs to it (TF's messages); returns the
    outputs to fetch (all of them, sorted, for an empty ``output_filter``)."""
    if info is None or signature == INIT_OP_SIGNATURE:
        raise InvalidArgument(f"No signature was found with the name: {signature}")
    for name in inputs:
        if name not in info.inputs:
            raise InvalidArgument(
                f"input tensor alias not found in signature: {name}. "
                f"Inputs expected to be in the set {{{','.join(sorted(info.inputs))}}}."
            )
    outputs = tuple(output_filter) or tuple(sorted(info.outputs))
    for name in outputs:
        if name not in info.outputs:
            raise InvalidArgument(
                f"output tensor alias not found in signature: {name} "
                f"Outputs expected to be in the set {{{','.join(sorted(info.outputs))}}}."
            )
    return outputs
