"""Input loading and generation for the client commands (no server, no TensorFlow)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from mlsrv.client import inputs
from mlsrv.errors import InvalidArgument, UsageError
from mlsrv.protocol.types import RequestFormat, SignatureInfo, TensorInfo

HALF = SignatureInfo(
    inputs={"x": TensorInfo("x:0", "DT_FLOAT", (-1, 1))}, outputs={"y": TensorInfo("y:0", "DT_FLOAT", (-1, 1))}
)
MULTI = SignatureInfo(
    inputs={
        "f": TensorInfo("f:0", "DT_FLOAT", (-1, 3)),
        "i": TensorInfo("i:0", "DT_INT64", (-1,)),
        "s": TensorInfo("s:0", "DT_STRING", (-1,)),
    },
    outputs={},
)


def test_read_arg_literal_file_and_stdin(tmp_path: Path) -> None:
    path = tmp_path / "body.json"
    path.write_bytes(b'{"instances": [1]}')
    assert inputs.read_arg('{"a": 1}', "--data") == b'{"a": 1}'
    assert inputs.read_arg(f"@{path}", "--data") == b'{"instances": [1]}'
    assert inputs.read_arg("-", "--data", io.BytesIO(b"from stdin")) == b"from stdin"
    with pytest.raises(UsageError, match="--data: file not found"):
        inputs.read_arg(f"@{tmp_path / 'missing.json'}", "--data")


def test_parse_document_keeps_tf_serving_parse_messages() -> None:
    assert inputs.parse_document(b'{"instances": [NaN]}')["instances"][0] != 0  # NaN tokens accepted, as TF
    with pytest.raises(UsageError, match=r"^--data: JSON Parse error: Invalid value\. at offset: 0$"):
        inputs.parse_document(b"?")
    with pytest.raises(UsageError, match="Is not object"):
        inputs.parse_document(b"[1]")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("x=a.npy", inputs.InputArg("x", "a.npy")),
        ("x=@data.npz[x]", inputs.InputArg("x", "data.npz", "x")),
        ("x=@data.bin", inputs.InputArg("x", "data.bin")),
        ("x=dir/v.npz[k]", inputs.InputArg("x", "dir/v.npz", "k")),
        ("x=[[1.0], [2.0]]", inputs.InputArg("x", literal="[[1.0], [2.0]]")),
        ('s=["a=b"]', inputs.InputArg("s", literal='["a=b"]')),
        ("[[1.0]]", inputs.InputArg("", literal="[[1.0]]")),
    ],
)
def test_parse_input_arg(text: str, expected: inputs.InputArg) -> None:
    assert inputs.parse_input_arg(text) == expected


def test_parse_input_arg_rejects_empty_value() -> None:
    with pytest.raises(UsageError, match="expected NAME=FILE.npy"):
        inputs.parse_input_arg("x=")


def test_inputs_from_files_and_literals_are_typed_by_the_signature(tmp_path: Path) -> None:
    np.save(tmp_path / "f.npy", np.ones((2, 3)))  # float64 on disk -> DT_FLOAT
    np.savez(tmp_path / "d.npz", i=np.array([1, 2], dtype=np.int32), other=np.zeros(1))
    args = [
        inputs.parse_input_arg(f"f={tmp_path / 'f.npy'}"),
        inputs.parse_input_arg(f"i=@{tmp_path / 'd.npz'}[i]"),
        inputs.parse_input_arg('s=["hello", {"b64": "d29ybGQ="}]'),
    ]
    request = inputs.inputs_from_args(args, MULTI)
    assert request.format is RequestFormat.COLUMNAR
    assert request.inputs["f"].dtype == np.float32 and request.inputs["f"].shape == (2, 3)
    assert request.inputs["i"].dtype == np.int64 and request.inputs["i"].tolist() == [1, 2]
    assert request.inputs["s"].tolist() == [b"hello", b"world"]
    assert request.rows == 2


def test_unnamed_input_needs_a_single_input_signature() -> None:
    request = inputs.inputs_from_args([inputs.parse_input_arg("[[1.5]]")], HALF)
    assert request.inputs["x"].tolist() == [[1.5]] and request.inputs["x"].dtype == np.float32
    with pytest.raises(UsageError, match="needs a signature with one input"):
        inputs.inputs_from_args([inputs.parse_input_arg("[1.0]")], MULTI)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"x": [[1.0]], "z": [1.0]}, "'z' is not an input of this signature"),
        ({}, r"missing input\(s\): x"),
        ({"x": np.array([["a"]])}, "cannot convert <U1 values to DT_FLOAT"),
        ({"x": [["a"]]}, "is not of expected type: float"),
    ],
)
def test_conform_inputs_errors(values: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        inputs.conform_inputs(values, HALF)


def test_conform_refuses_lossy_float_to_int() -> None:
    sig = SignatureInfo(inputs={"i": TensorInfo("i", "DT_INT32", (-1,))}, outputs={})
    with pytest.raises(UsageError, match="cannot convert float64 values to DT_INT32"):
        inputs.conform_inputs({"i": np.array([1.5])}, sig)


def test_load_input_errors(tmp_path: Path) -> None:
    np.savez(tmp_path / "two.npz", a=np.zeros(1), b=np.zeros(1))
    with pytest.raises(UsageError, match="holds 2 arrays"):
        inputs.load_input(inputs.InputArg("x", str(tmp_path / "two.npz")))
    with pytest.raises(UsageError, match="has no array named 'c'"):
        inputs.load_input(inputs.InputArg("x", str(tmp_path / "two.npz"), "c"))
    with pytest.raises(UsageError, match="file not found"):
        inputs.load_input(inputs.InputArg("x", str(tmp_path / "none.npy")))
    with pytest.raises(UsageError, match="not a file name and not JSON"):
        inputs.load_input(inputs.InputArg("x", literal="hello"))
    np.save(tmp_path / "obj.npy", np.array([b"a"], dtype=object), allow_pickle=True)
    with pytest.raises(UsageError, match="without pickle"):
        inputs.load_input(inputs.InputArg("x", str(tmp_path / "obj.npy")))


def test_decode_request_uses_tf_serving_rules() -> None:
    request = inputs.decode_request({"instances": [[1.0], [2.0]]}, HALF)
    assert request.format is RequestFormat.ROW and request.inputs["x"].dtype == np.float32
    with pytest.raises(InvalidArgument, match="not of expected type: float"):
        inputs.decode_request({"instances": [["a"]]}, HALF)


def test_load_request_file_json_jsonl_npy_npz(tmp_path: Path) -> None:
    (tmp_path / "one.json").write_text('{"inputs": {"x": [[1.0]]}}')
    (tmp_path / "many.json").write_text('{"instances": [[1.0]]}\n{"instances": [[2.0], [3.0]]}\n')
    np.save(tmp_path / "x.npy", np.array([[4.0]], dtype=np.float32))
    np.savez(tmp_path / "x.npz", x=np.array([[5.0]]))
    one = inputs.load_request_file(str(tmp_path / "one.json"), HALF)
    many = inputs.load_request_file(str(tmp_path / "many.json"), HALF)
    npy = inputs.load_request_file(str(tmp_path / "x.npy"), HALF)
    npz = inputs.load_request_file(str(tmp_path / "x.npz"), HALF)
    assert [r.format for r in one] == [RequestFormat.COLUMNAR]
    assert [r.rows for r in many] == [1, 2] and many[0].format is RequestFormat.ROW
    assert npy[0].inputs["x"].tolist() == [[4.0]]
    assert npz[0].inputs["x"].dtype == np.float32


def test_parse_shapes() -> None:
    assert inputs.parse_shapes(["img:224,224,3", "x:"]) == {"img": (224, 224, 3), "x": ()}
    for bad in ("img", "img:a,b", "img:-1", ":3"):
        with pytest.raises(UsageError, match="--shape"):
            inputs.parse_shapes([bad])


def test_generate_request_dtypes_batch_and_determinism() -> None:
    sig = SignatureInfo(
        inputs={
            "f": TensorInfo("f", "DT_FLOAT", (-1, 2)),
            "i": TensorInfo("i", "DT_INT32", (-1,)),
            "b": TensorInfo("b", "DT_BOOL", (-1, 1)),
            "s": TensorInfo("s", "DT_STRING", (-1,)),
            "fixed": TensorInfo("fixed", "DT_DOUBLE", (3,)),
            "img": TensorInfo("img", "DT_UINT8", (-1, -1, -1, 3)),
        },
        outputs={},
    )
    request = inputs.generate_request(sig, batch_size=4, shapes={"img": (8, 8, 3)}, seed=1)
    got = {k: (v.dtype, v.shape) for k, v in request.inputs.items()}
    assert got == {
        "f": (np.float32, (4, 2)),
        "i": (np.int32, (4,)),
        "b": (np.bool_, (4, 1)),
        "s": (np.dtype(object), (4,)),
        "fixed": (np.float64, (3,)),
        "img": (np.uint8, (4, 8, 8, 3)),
    }
    assert all(len(s) == inputs.STRING_BYTES for s in request.inputs["s"])
    assert 0 <= request.inputs["f"].min() and request.inputs["f"].max() < 1
    again = inputs.generate_request(sig, batch_size=4, shapes={"img": (8, 8, 3)}, seed=1)
    other = inputs.generate_request(sig, batch_size=4, shapes={"img": (8, 8, 3)}, seed=2)
    assert np.array_equal(again.inputs["f"], request.inputs["f"])
    assert not np.array_equal(other.inputs["f"], request.inputs["f"])
    zeros = inputs.generate_request(sig, batch_size=2, shapes={"img": (1, 1, 3)}, fill="zeros")
    assert not zeros.inputs["f"].any() and zeros.inputs["s"].tolist() == [b"", b""]


@pytest.mark.parametrize(
    ("info", "shapes", "message"),
    [
        (TensorInfo("x", "DT_FLOAT", (-1, -1)), {}, r"unknown dimensions \(-1, -1\); give them with --shape x:D"),
        (TensorInfo("x", "DT_FLOAT", None), {}, "unknown rank"),
        (TensorInfo("x", "DT_FLOAT", (-1, 3)), {"x": (4,)}, "does not fit the signature shape"),
        (TensorInfo("x", "DT_FLOAT", (-1, 3)), {"y": (3,)}, "--shape y: no such input"),
        (TensorInfo("x", "DT_COMPLEX64", (-1,)), {}, None),
        (TensorInfo("x", "DT_QINT8", (-1,)), {}, "cannot generate"),
    ],
)
def test_generate_request_shape_errors(
    info: TensorInfo, shapes: dict[str, tuple[int, ...]], message: str | None
) -> None:
    sig = SignatureInfo(inputs={"x": info}, outputs={})
    if message is None:
        assert inputs.generate_request(sig, shapes=shapes).inputs["x"].dtype == np.complex64
        return
    with pytest.raises(UsageError, match=message):
        inputs.generate_request(sig, shapes=shapes)


def test_unknown_rank_with_shape_is_batched() -> None:
    sig = SignatureInfo(inputs={"x": TensorInfo("x", "DT_FLOAT", None, has_shape=False)}, outputs={})
    assert inputs.generate_request(sig, batch_size=3, shapes={"x": (2,)}).inputs["x"].shape == (3, 2)
