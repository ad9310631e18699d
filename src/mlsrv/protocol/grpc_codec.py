"""TF Serving gRPC messages (``tensorflow_serving.apis``) <-> ``protocol.types``, for server and client.

``*_from_pb`` on requests and ``*_to_pb`` on responses are the server side; the inverses are the
client side. The server side builds messages of the official ``apis`` pb2 modules, which import all
of TensorFlow (``tensor_pb2`` lives in the tensorflow package), so those functions import them when
called and importing this module stays TF-free. The client side builds messages from
:mod:`mlsrv.protocol.client_protos` (the same descriptors in a private pool, no TensorFlow) and
reads responses by field, whichever pool they come from.

Only decoding, and the checks TF Serving makes before it looks at a model, live here. Everything that
needs the servable or its signature (version lookup, aliases, dtypes, output_filter, ``Input is
empty.`` which TF reports after the lookup) is the DataPlane's. Nothing here maps errors to codes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import numpy as np

from mlsrv.errors import Code, InvalidArgument
from mlsrv.protocol import tensor_codec
from mlsrv.protocol.client_protos import message_class
from mlsrv.protocol.grpc_examples import (
    ExamplesResponse,
    classify_request_from_pb,
    classify_request_to_pb,
    classify_response_from_pb,
    classify_response_to_pb,
    examples_from_input_pb,
    examples_to_input_pb,
    multi_inference_request_from_pb,
    multi_inference_request_to_pb,
    multi_inference_response_from_pb,
    multi_inference_response_to_pb,
    regress_request_from_pb,
    regress_request_to_pb,
    regress_response_from_pb,
    regress_response_to_pb,
)
from mlsrv.protocol.grpc_spec import request_spec, spec_from_pb, spec_of, spec_to_pb
from mlsrv.protocol.types import (
    ModelMetadata,
    ModelSpec,
    ModelStatus,
    PredictRequest,
    PredictResponse,
    SignatureInfo,
    State,
    TensorInfo,
    VersionStatus,
)

#: The only metadata field TF Serving knows, and the key of the packed SignatureDefMap.
SIGNATURE_DEF: Final = "signature_def"

__all__ = [
    "ExamplesResponse", "classify_request_from_pb", "classify_request_to_pb", "classify_response_from_pb",
    "classify_response_to_pb", "examples_from_input_pb", "examples_to_input_pb", "multi_inference_request_from_pb",
    "multi_inference_request_to_pb", "multi_inference_response_from_pb", "multi_inference_response_to_pb",
    "regress_request_from_pb", "regress_request_to_pb", "regress_response_from_pb", "regress_response_to_pb",
    "request_spec", "spec_from_pb", "spec_to_pb",
]


# -- Predict ----------------------------------------------------------------------------------------


def predict_request_from_pb(pb: Any, budget: tensor_codec.FillBudget | None = None) -> PredictRequest:
    """Server side. A tensor TF could not parse gives TF's ``tensor parsing error: <alias>``.

    ``budget`` bounds what the request's tensors may fill beyond the values they carry; a tensor
    past it gets TF's prefix and the reason, since TF itself would have allocated it.
    """
    spec = request_spec(pb)
    inputs = {}
    for alias in sorted(pb.inputs):
        try:
            inputs[alias] = tensor_codec.to_ndarray(pb.inputs[alias], budget)
        except tensor_codec.TensorTooLarge as exc:
            raise InvalidArgument(f"tensor parsing error: {alias}: {exc.message}") from None
        except InvalidArgument:
            raise InvalidArgument(f"tensor parsing error: {alias}") from None
    return PredictRequest(spec, inputs, tuple(pb.output_filter))


def predict_request_to_pb(req: PredictRequest, *, as_tensor_content: bool = True) -> Any:
    """Client side; ``tensor_content`` by default, as ``tf.make_tensor_proto`` does for arrays."""
    pb = message_class("tensorflow.serving.PredictRequest")()
    spec_to_pb(req.spec, pb.model_spec)
    _tensors_to_pb(req.inputs, pb.inputs, as_tensor_content)
    pb.output_filter.extend(req.output_filter)
    return pb


def predict_response_to_pb(resp: PredictResponse, *, as_tensor_content: bool) -> Any:
    """Server side; typed fields unless ``--enable_serialization_as_tensor_content``."""
    from tensorflow_serving.apis import predict_pb2

    pb = predict_pb2.PredictResponse()
    spec_to_pb(resp.spec, pb.model_spec)
    _tensors_to_pb(resp.outputs, pb.outputs, as_tensor_content)
    return pb


def predict_response_from_pb(pb: Any) -> PredictResponse:
    """Client side. Raises ``InvalidArgument`` naming the output that could not be decoded."""
    outputs = {}
    for alias in sorted(pb.outputs):
        try:
            outputs[alias] = tensor_codec.to_ndarray(pb.outputs[alias])
        except InvalidArgument as exc:
            raise InvalidArgument(f"cannot decode output tensor {alias}: {exc.message}") from exc
    return PredictResponse(spec_of(pb.model_spec), outputs)


def _tensors_to_pb(tensors: Mapping[str, np.ndarray], pb_map: Any, as_tensor_content: bool) -> None:
    for alias, array in tensors.items():
        tensor_codec.from_ndarray(array, pb_map[alias], as_tensor_content=as_tensor_content)


# -- GetModelMetadata -------------------------------------------------------------------------------


def metadata_request_check(pb: Any) -> None:
    """TF Serving's metadata_field validation (it runs after the ModelSpec presence check)."""
    if not pb.metadata_field:
        raise InvalidArgument("GetModelMetadataRequest must specify at least one metadata_field")
    for field in pb.metadata_field:
        if field != SIGNATURE_DEF:
            raise InvalidArgument(f"Metadata field {field} is not supported")


def metadata_request_from_pb(pb: Any) -> ModelSpec:
    """All of TF's request checks in its order: ModelSpec present, fields, then the name."""
    if not pb.HasField("model_spec"):
        raise InvalidArgument("Missing ModelSpec")
    metadata_request_check(pb)
    return spec_from_pb(pb.model_spec, has_field=True)


def metadata_request_to_pb(spec: ModelSpec) -> Any:
    pb = message_class("tensorflow.serving.GetModelMetadataRequest")()
    spec_to_pb(spec, pb.model_spec)
    pb.metadata_field.append(SIGNATURE_DEF)
    return pb


def metadata_response_to_pb(metadata: ModelMetadata) -> Any:
    """``metadata["signature_def"]`` packs a SignatureDefMap; the spec has name and version only."""
    from tensorflow_serving.apis import get_model_metadata_pb2

    pb = get_model_metadata_pb2.GetModelMetadataResponse()
    spec_to_pb(metadata.spec, pb.model_spec)
    pb.metadata[SIGNATURE_DEF].Pack(signature_def_map_to_pb(metadata.signatures))
    return pb


def metadata_response_from_pb(pb: Any) -> ModelMetadata:
    """Client side (``Unpack`` goes by the type's name, so a response of either pool is read)."""
    signatures: dict[str, SignatureInfo] = {}
    if SIGNATURE_DEF in pb.metadata:
        packed = message_class("tensorflow.serving.SignatureDefMap")()
        if not pb.metadata[SIGNATURE_DEF].Unpack(packed):
            raise InvalidArgument(f"metadata {SIGNATURE_DEF} is not a SignatureDefMap")
        signatures = signature_def_map_from_pb(packed)
    return ModelMetadata(spec_of(pb.model_spec), signatures)


def signature_def_map_to_pb(signatures: Mapping[str, SignatureInfo]) -> Any:
    """A ``tensorflow.serving.SignatureDefMap``; reused wherever SignatureDefs go on the wire."""
    from tensorflow_serving.apis import get_model_metadata_pb2

    pb = get_model_metadata_pb2.SignatureDefMap()
    for name, signature in signatures.items():
        signature_pb = pb.signature_def[name]
        signature_pb.method_name = signature.method_name
        for alias, info in signature.inputs.items():
            _tensor_info_to_pb(info, signature_pb.inputs[alias])
        for alias, info in signature.outputs.items():
            _tensor_info_to_pb(info, signature_pb.outputs[alias])
        for alias, value in signature.defaults.items():
            tensor_codec.from_ndarray(value, signature_pb.defaults[alias], as_tensor_content=False)
    return pb


def signature_def_map_from_pb(pb: Any) -> dict[str, SignatureInfo]:
    return {
        name: SignatureInfo(
            inputs={alias: _tensor_info_from_pb(sd.inputs[alias]) for alias in sorted(sd.inputs)},
            outputs={alias: _tensor_info_from_pb(sd.outputs[alias]) for alias in sorted(sd.outputs)},
            method_name=sd.method_name,
            defaults={alias: tensor_codec.to_ndarray(sd.defaults[alias]) for alias in sorted(sd.defaults)},
        )
        for name, sd in sorted(pb.signature_def.items())
    }


def _tensor_info_to_pb(info: TensorInfo, pb: Any) -> None:
    pb.name = info.name
    # NOTE: the DataType enum comes from the message's descriptor, so no tensorflow module is named here.
    known = pb.DESCRIPTOR.fields_by_name["dtype"].enum_type.values_by_name.get(info.dtype)
    pb.dtype = known.number if known is not None else 0
    if not info.has_shape:
        return
    shape = pb.tensor_shape
    shape.SetInParent()
    if info.shape is None:
        shape.unknown_rank = True
    else:
        for size in info.shape:
            shape.dim.add().size = size


def _tensor_info_from_pb(pb: Any) -> TensorInfo:
    known = pb.DESCRIPTOR.fields_by_name["dtype"].enum_type.values_by_number.get(pb.dtype)
    shape = pb.tensor_shape
    return TensorInfo(
        name=pb.name,
        dtype=known.name if known is not None else "DT_INVALID",
        shape=None if shape.unknown_rank else tuple(d.size for d in shape.dim),
        has_shape=pb.HasField("tensor_shape"),
    )


# -- GetModelStatus ---------------------------------------------------------------------------------


def status_request_from_pb(pb: Any) -> ModelSpec:
    """``Missing ModelSpec`` only; an empty name is the DataPlane's NOT_FOUND, a label is ignored there."""
    return request_spec(pb, require_name=False)


def status_request_to_pb(spec: ModelSpec) -> Any:
    pb = message_class("tensorflow.serving.GetModelStatusRequest")()
    spec_to_pb(spec, pb.model_spec)
    return pb


def status_response_to_pb(status: ModelStatus) -> Any:
    from tensorflow_serving.apis import get_model_status_pb2

    pb = get_model_status_pb2.GetModelStatusResponse()
    for version in status.versions:
        item = pb.model_version_status.add()
        item.version = version.version
        item.state = version.state.value
        item.status.SetInParent()
        item.status.error_code = version.error_code.value
        item.status.error_message = version.error_message
    return pb


def status_response_from_pb(pb: Any, *, name: str = "") -> ModelStatus:
    """Client side. The response does not carry the model name, so the caller passes it."""
    return ModelStatus(
        name,
        tuple(
            VersionStatus(
                version=item.version,
                state=_enum(State, item.state, State.UNKNOWN),
                error_code=_enum(Code, item.status.error_code, Code.UNKNOWN),
                error_message=item.status.error_message,
            )
            for item in pb.model_version_status
        ),
    )


def _enum(kind: Any, value: int, default: Any) -> Any:
    try:
        return kind(value)
    except ValueError:
        return default
