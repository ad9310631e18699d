"""The one internal request/response vocabulary shared by the server frontends and the client.

Wire formats (REST JSON, gRPC protobuf) are converted to and from these types at the edge, in
``json_codec`` and ``grpc_codec``; everything in between (DataPlane, batcher, client, bench) only
sees these. Tensors are numpy arrays; DT_STRING tensors are ``object`` arrays of ``bytes``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mlsrv.errors import Code

if TYPE_CHECKING:  # arrays only in annotations: importing the types does not import numpy
    import numpy as np

DEFAULT_SIGNATURE = "serving_default"
INIT_OP_SIGNATURE = "__saved_model_init_op"

CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
PREDICT_METHOD = "tensorflow/serving/predict"


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Which servable a request is for. ``version`` and ``label`` are exclusive; neither means latest.

    ``signature`` empty means the default signature (``serving_default``).
    """

    name: str
    version: int | None = None
    label: str | None = None
    signature: str = ""

    def describe(self) -> str:
        """TF Serving's servable request text: ``Latest(m)`` or ``Specific(m, 3)``."""
        if self.version is None:
            return f"Latest({self.name})"
        return f"Specific({self.name}, {self.version})"

    @property
    def signature_or_default(self) -> str:
        return self.signature or DEFAULT_SIGNATURE


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """A signature input or output. ``shape`` is None for unknown rank; -1 marks an unknown dim.

    ``has_shape`` is False when the SignatureDef carries no ``tensor_shape`` at all.
    """

    name: str
    dtype: str  # "DT_FLOAT" etc.
    shape: tuple[int, ...] | None
    has_shape: bool = True

    def admits(self, shape: tuple[int, ...]) -> bool:
        """Whether a value of ``shape`` fits the declared shape (-1 fits any size; no shape or an
        unknown rank fits all)."""
        if not self.has_shape or self.shape is None:
            return True
        return len(self.shape) == len(shape) and all(e in (-1, a) for e, a in zip(self.shape, shape, strict=True))


@dataclass(frozen=True, slots=True)
class SignatureInfo:
    """A SignatureDef. ``defaults`` holds values for inputs a Predict request may leave out."""

    inputs: Mapping[str, TensorInfo]
    outputs: Mapping[str, TensorInfo]
    method_name: str = PREDICT_METHOD
    defaults: Mapping[str, np.ndarray] = field(default_factory=dict, compare=False)


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    """GetModelMetadata result: the resolved spec (signature empty, as TF Serving) and every signature."""

    spec: ModelSpec
    signatures: Mapping[str, SignatureInfo]


class RequestFormat(enum.Enum):
    """REST body layout; decides the response key (``predictions`` vs ``outputs``)."""

    ROW = "instances"
    COLUMNAR = "inputs"


@dataclass(slots=True)
class PredictRequest:
    spec: ModelSpec
    inputs: dict[str, np.ndarray]
    output_filter: tuple[str, ...] = ()
    format: RequestFormat = RequestFormat.COLUMNAR


@dataclass(slots=True)
class PredictResponse:
    """``spec`` is the resolved one: name, version and signature name actually used."""

    spec: ModelSpec
    outputs: dict[str, np.ndarray]


class InferenceMethod(enum.Enum):
    CLASSIFY = "classify"
    REGRESS = "regress"


@dataclass(frozen=True, slots=True)
class MultiInferenceTask:
    """One MultiInference task; ``method`` is None for a method name TF does not support."""

    spec: ModelSpec
    method: InferenceMethod | None
    method_name: str


@dataclass(slots=True)
class ExamplesRequest:
    """Classify or regress input: tf.Examples already serialized (context merged into each one).

    Serialized bytes are what the model's ``inputs`` DT_STRING tensor takes, so REST and gRPC
    converge here and the DataPlane never needs TensorFlow's Example class.
    """

    spec: ModelSpec
    method: InferenceMethod
    examples: list[bytes]


@dataclass(slots=True)
class ClassifyResponse:
    """Per example, the (label, score) pairs. ``classes`` is None when the signature has no classes output."""

    spec: ModelSpec
    classes: np.ndarray | None  # [n, k] bytes
    scores: np.ndarray | None  # [n, k] float32


@dataclass(slots=True)
class RegressResponse:
    spec: ModelSpec
    values: np.ndarray  # [n] float32


class State(enum.Enum):
    """TF Serving's ManagerState as exposed in ModelVersionStatus (proto enum values)."""

    UNKNOWN = 0
    START = 10
    LOADING = 20
    AVAILABLE = 30
    UNLOADING = 40
    END = 50


@dataclass(frozen=True, slots=True)
class VersionStatus:
    version: int
    state: State
    error_code: Code = Code.OK
    error_message: str = ""


@dataclass(frozen=True, slots=True)
class ModelStatus:
    """All versions the server has seen for one model, highest version first (as TF Serving)."""

    name: str
    versions: tuple[VersionStatus, ...] = field(default_factory=tuple)
