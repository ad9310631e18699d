"""The TensorProto decoder and gRPC Predict decoding: any message gives arrays or INVALID_ARGUMENT."""

from __future__ import annotations

from typing import Any

import numpy as np
from google.protobuf.message import DecodeError
from hypothesis import given
from hypothesis import strategies as st
from tensorflow.core.framework import tensor_pb2
from tensorflow_serving.apis import predict_pb2

from mlsrv.errors import InvalidArgument
from mlsrv.protocol import grpc_codec, tensor_codec

BUDGET = 1 << 20
DTYPES = st.integers(min_value=0, max_value=30) | st.integers(min_value=101, max_value=125) | st.integers(0, 2**20)
DIMS = st.lists(
    st.integers(min_value=-2, max_value=12) | st.sampled_from([2**31, 2**40, 2**62, 250_000_000]), max_size=5
)
FIELDS = {
    "float_val": st.floats(width=32, allow_nan=True),
    "double_val": st.floats(allow_nan=True),
    "int_val": st.integers(-(2**31), 2**31 - 1),
    "int64_val": st.integers(-(2**63), 2**63 - 1),
    "uint32_val": st.integers(0, 2**32 - 1),
    "uint64_val": st.integers(0, 2**64 - 1),
    "bool_val": st.booleans(),
    "half_val": st.integers(-(2**31), 2**31 - 1),
    "string_val": st.binary(max_size=5),
    "scomplex_val": st.floats(width=32),
    "dcomplex_val": st.floats(),
}


@st.composite
def tensor_protos(draw: st.DrawFn) -> Any:
    proto = tensor_pb2.TensorProto(dtype=draw(DTYPES))
    for size in draw(DIMS):
        proto.tensor_shape.dim.add().size = size
    if draw(st.booleans()):
        proto.tensor_content = draw(st.binary(max_size=64))
    for name in draw(st.lists(st.sampled_from(sorted(FIELDS)), max_size=2, unique=True)):
        getattr(proto, name).extend(draw(st.lists(FIELDS[name], max_size=6)))
    return proto


@given(tensor_protos())
def test_tensor_protos(proto: Any) -> None:
    try:
        array = tensor_codec.to_ndarray(proto, tensor_codec.FillBudget(BUDGET))
    except InvalidArgument as error:
        assert "Traceback" not in error.message
        return
    assert isinstance(array, np.ndarray)
    assert array.nbytes <= BUDGET + 64 * 16 or array.dtype == object


@given(st.binary(max_size=300))
def test_predict_request_bytes(data: bytes) -> None:
    try:
        request = predict_pb2.PredictRequest.FromString(data)
    except DecodeError:
        return  # the server's lenient parser answers these INVALID_ARGUMENT (tests/server/test_grpc_adapter.py)
    try:
        grpc_codec.predict_request_from_pb(request, tensor_codec.FillBudget(BUDGET))
    except InvalidArgument as error:
        assert "Traceback" not in error.message


@given(st.dictionaries(st.text(max_size=3), tensor_protos(), max_size=3))
def test_predict_requests_share_one_budget(inputs: dict[str, Any]) -> None:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "m"
    for alias, proto in inputs.items():
        request.inputs[alias].CopyFrom(proto)
    budget = tensor_codec.FillBudget(BUDGET)
    try:
        decoded = grpc_codec.predict_request_from_pb(request, budget)
    except InvalidArgument as error:
        assert error.message.startswith("tensor parsing error: ")
        return
    assert budget.remaining >= 0
    assert set(decoded.inputs) == set(inputs)
