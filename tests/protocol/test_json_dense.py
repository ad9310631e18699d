"""The C fast path (``json_dense``) against the exact path (``json_codec``), on generated bodies.

The fast path may only answer for a body the exact path accepts, with the identical tensor (dtype,
shape and every bit), signature name and format; for everything else it must answer None.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlsrv.errors import MlsrvError
from mlsrv.protocol import json_codec
from mlsrv.protocol.json_dense import decode_dense
from mlsrv.protocol.types import RequestFormat, SignatureInfo, TensorInfo


def signatures(dtype: str = "DT_FLOAT", inputs: int = 1) -> dict[str, SignatureInfo]:
    infos = {f"x{i}" if inputs > 1 else "x": TensorInfo("x:0", dtype, None) for i in range(inputs)}
    sig = SignatureInfo(inputs=infos, outputs={"y": TensorInfo("y:0", dtype, None)})
    return {"serving_default": sig, "other": sig}


def exact(body: bytes, sigs: dict[str, SignatureInfo]) -> tuple[str, dict[str, np.ndarray], RequestFormat] | None:
    """The exact path's answer (the order of rest_decode.predict_request), or None if it refuses."""
    try:
        doc = json_codec.parse_body(body)
        name = json_codec.signature_name_of(doc)
        signature = sigs.get(name or "serving_default")
        if signature is None:
            return None
        inputs, fmt = json_codec.decode_predict_inputs(doc, signature)
    except MlsrvError:
        return None
    return name, inputs, fmt


def assert_same_or_declined(body: bytes, sigs: dict[str, SignatureInfo]) -> bool:
    """Checks the contract; True when the fast path took the body."""
    fast = decode_dense(body, sigs)
    if fast is None:
        return False
    slow = exact(body, sigs)
    assert slow is not None, f"fast path accepted a body the exact path refuses: {body[:200]!r}"
    assert fast[0] == slow[0] and fast[2] is slow[2]
    assert fast[1].keys() == slow[1].keys()
    for name, array in fast[1].items():
        other = slow[1][name]
        assert array.dtype == other.dtype and array.shape == other.shape
        assert array.tobytes() == other.tobytes(), body[:200]
    return True


numbers = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.integers(min_value=-5, max_value=5),
    st.sampled_from([0.0, -0.0, 1e39, -1e39, 5e-324, 1.7976931348623157e308]),
)


@st.composite
def dense_values(draw: st.DrawFn) -> Any:
    shape = draw(st.lists(st.integers(1, 3), min_size=1, max_size=4))
    size = int(np.prod(shape))
    leaves = draw(st.lists(numbers, min_size=size, max_size=size))

    def nest(level: int, start: int) -> Any:
        if level == len(shape):
            return leaves[start]
        step = int(np.prod(shape[level + 1:]))
        return [nest(level + 1, start + i * step) for i in range(shape[level])]

    return nest(0, 0)


def mutate(value: Any, how: str, draw: st.DrawFn) -> Any:
    """One way a body stops being plainly dense; some stay valid for the exact path, some do not."""
    if how == "none":
        return value
    if how == "ragged" and isinstance(value, list) and len(value) > 1:
        return [*value, value[0]] if not isinstance(value[0], list) else [value[0][:-1] or value[0], *value[1:]]
    leaf_paths: list[list[int]] = []

    def walk(node: Any, path: list[int]) -> None:
        if isinstance(node, list):
            for i, child in enumerate(node):
                walk(child, [*path, i])
        else:
            leaf_paths.append(path)

    walk(value, [])
    path = draw(st.sampled_from(leaf_paths))
    replacement = {"bool": True, "false": False, "null": None, "string": "1.5", "object": {"b64": "AA=="},
                   "list": [1.0], "empty": []}.get(how, 0)
    copy = json.loads(json.dumps(value))
    if not path:
        return replacement
    node = copy
    for i in path[:-1]:
        node = node[i]
    node[path[-1]] = replacement
    return copy


#: How the input is written: plain, named as clients write it, or named in a way the fast path must decline.
FORMS = ("plain", "plain", "named", "named", "extra_member", "other_name", "first_row_only", "row_not_object")


def named(value: Any, key: str, form: str) -> Any:
    """``value`` (a nest) written in ``form``: ``{"x": value}`` for columnar, ``[{"x": row}, ...]`` for rows."""
    if form == "plain":
        return value
    if key == "inputs":
        return {"named": {"x": value}, "extra_member": {"x": value, "y": value}, "other_name": {"z": value},
                "first_row_only": {"x": value}, "row_not_object": {"x": {"x": value}}}[form]
    rows = value if isinstance(value, list) else [value]
    objects = [{"x": row} for row in rows]
    if form == "extra_member":
        objects[-1] = {"x": rows[-1], "y": 1}
    elif form == "other_name":
        objects[-1] = {"z": rows[-1]}
    elif form == "first_row_only":
        objects = [objects[0], *rows[1:]]
    elif form == "row_not_object":
        objects[-1] = [rows[-1]]
    return objects


@st.composite
def bodies(draw: st.DrawFn) -> tuple[bytes, str]:
    how = draw(st.sampled_from(["none", "none", "none", "ragged", "bool", "false", "null", "string", "object",
                                "list", "empty"]))
    value = mutate(draw(dense_values()), how, draw)
    key = draw(st.sampled_from(["instances", "inputs"]))
    doc: dict[str, Any] = {key: named(value, key, draw(st.sampled_from(FORMS)))}
    extra = draw(st.sampled_from(["", "name", "name_other", "bad_name", "both_keys", "unknown_key", "dup"]))
    if extra == "name":
        doc = {"signature_name": "serving_default", **doc}
    elif extra == "name_other":
        doc = {**doc, "signature_name": "other"}
    elif extra == "bad_name":
        doc["signature_name"] = 5
    elif extra == "both_keys":
        doc["instances" if key == "inputs" else "inputs"] = [1.0]
    elif extra == "unknown_key":
        doc["x"] = 1
    text = json.dumps(doc, separators=draw(st.sampled_from([(",", ":"), (", ", ": "), (" ,\n", " :\t")])))
    if extra == "dup":
        text = text[:-1] + f', "{key}": [1.0]' + "}"
    return text.encode(), how


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies(), st.sampled_from(["DT_FLOAT", "DT_DOUBLE"]))
def test_fast_path_answers_only_as_the_exact_path_does(case: tuple[bytes, str], dtype: str) -> None:
    body, _ = case
    assert_same_or_declined(body, signatures(dtype))


@settings(max_examples=200, deadline=None)
@given(dense_values(), st.sampled_from(["instances", "inputs"]), st.sampled_from(["DT_FLOAT", "DT_DOUBLE"]),
       st.sampled_from(["plain", "named"]))
def test_dense_bodies_plain_or_named_take_the_fast_path(value: Any, key: str, dtype: str, form: str) -> None:
    """Not only "declines safely": the common cases really are taken (and agree)."""
    value = value if isinstance(value, list) else [value]
    if form == "named" and key == "instances" and not isinstance(value[0], list):
        value = [value]  # a named row of one number is left to the exact path; a row of numbers is taken
    body = json.dumps({key: named(value, key, form)}).encode()
    assert assert_same_or_declined(body, signatures(dtype))


@settings(max_examples=300, deadline=None)
@given(dense_values(), st.sampled_from(["instances", "inputs"]), st.sampled_from(FORMS[2:]))
def test_named_inputs_are_taken_only_as_the_exact_path_reads_them(value: Any, key: str, form: str) -> None:
    """Each way of naming the input, valid or not, on dense values: the fast path agrees or declines."""
    value = value if isinstance(value, list) else [value]
    body = json.dumps({key: named(value, key, form)}).encode()
    taken = assert_same_or_declined(body, signatures())
    if form == "named" and not (key == "instances" and not isinstance(value[0], list)):
        assert taken


@pytest.mark.parametrize(
    "body",
    [
        b'{"instances": [[1, 2], [3]]}',  # ragged
        b'{"instances": [[1, 2], [3], [4, 5, 6]]}',  # ragged with the leaf count of a 3x2 array
        b'{"instances": [[1, 2], 3, 4]}',  # mixed depth
        b'{"instances": [1, true]}',
        b'{"instances": [NaN]}',
        b'{"instances": [1e400]}',
        b'{"instances": [1], "instances": [2, 3]}',  # duplicate key: orjson keeps the last one
        b'\xef\xbb\xbf{"instances": [1]}',  # byte-order mark
        b'{"instances": [1], "signature_name": "a\\u005b"}',  # an escape
        b'{"instances": [1], "signature_name": "missing"}',
        b'{"instances": []}',
        b'{"instances": [[]]}',
        b'{"instances": 1.0}',
        b'{"inputs": {"x": 1.0}}',  # a named scalar
        b'{"inputs": {"x": [1.0], "y": [1.0]}}',  # a member the signature does not name
        b'{"inputs": {"x": [1.0], "x": [1.0]}}',  # duplicate member
        b'{"inputs": {"y": [1.0]}}',
        b'{"instances": [{"x": 1.0}]}',  # named rows of one number each
        b'{"instances": [{"x": [1.0]}, {"y": [1.0]}]}',
        b'{"instances": [{"x": [1.0]}, [1.0]]}',  # the same skeleton as two named rows
        b'{"instances": [{"x": [1.0], "x": [2.0]}]}',
        b'{"instances": [1.0]} trailing',
        b"[1.0]",
        b'{"instances": ' + b"[" * 5000 + b"1" + b"]" * 5000 + b"}",  # deeper than simdjson allows
    ],
)
def test_bodies_that_are_not_plainly_dense_are_declined(body: bytes) -> None:
    assert decode_dense(body, signatures()) is None


def test_an_input_called_b64_is_left_to_the_exact_path() -> None:
    """``{"b64": ...}`` is a base64 value to the exact path, whatever the input is called."""
    sig = SignatureInfo(inputs={"b64": TensorInfo("x:0", "DT_FLOAT", None)}, outputs={})
    for body in (b'{"inputs": {"b64": [1.0]}}', b'{"instances": [{"b64": [1.0]}]}', b'{"instances": [[1.0]]}'):
        assert decode_dense(body, {"serving_default": sig}) is None


def test_only_single_float_input_signatures_are_taken() -> None:
    body = b'{"instances": [[1, 2]]}'
    assert decode_dense(body, signatures("DT_INT64")) is None
    assert decode_dense(body, signatures("DT_FLOAT", inputs=2)) is None
    assert decode_dense(body, signatures("DT_FLOAT")) is not None


def test_an_image_decodes_to_the_exact_tensor() -> None:
    image = np.random.default_rng(0).random((1, 224, 224, 3), dtype=np.float32)
    body = json.dumps({"instances": image.tolist()}).encode()
    assert assert_same_or_declined(body, signatures())
    fast = decode_dense(body, signatures())
    assert fast is not None
    np.testing.assert_array_equal(fast[1]["x"], image)


def test_the_rest_decoder_takes_large_dense_bodies_and_keeps_exact_errors_for_the_rest() -> None:
    from mlsrv.protocol.types import ModelSpec
    from mlsrv.server.rest_decode import DENSE_MIN_BYTES, RestTarget, predict_request

    rows = np.random.default_rng(1).random((4, DENSE_MIN_BYTES // 16), dtype=np.float32)
    body = json.dumps({"instances": rows.tolist(), "signature_name": "other"}).encode()
    assert len(body) >= DENSE_MIN_BYTES
    request = predict_request(body, "", ModelSpec("m"), RestTarget(signatures()))
    assert request.spec.signature == "other" and request.format is RequestFormat.ROW
    np.testing.assert_array_equal(request.inputs["x"], rows)

    ragged = json.dumps({"instances": [rows[0].tolist(), rows[1, :-1].tolist()]}).encode()
    assert len(ragged) >= DENSE_MIN_BYTES
    with pytest.raises(MlsrvError) as caught:
        predict_request(ragged, "", ModelSpec("m"), RestTarget(signatures()))
    slow = None
    try:
        json_codec.decode_predict_inputs(json_codec.parse_body(ragged), signatures()["serving_default"])
    except MlsrvError as error:
        slow = error.message
    assert slow is not None and caught.value.message == slow
