"""Request-body parsing: TF Serving's rapidjson grammar, messages and offsets (spec 2.7 step 1, 2.10 #12/#13/#30)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from mlsrv.errors import InvalidArgument
from mlsrv.protocol.json_codec import parse_body, signature_name_of
from mlsrv.protocol.json_parse import loads


def parse_error(body: bytes) -> str:
    with pytest.raises(InvalidArgument) as info:
        parse_body(body)
    return info.value.message


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "JSON Parse error: The document is empty"),
        (b"  \n", "JSON Parse error: The document is empty. at offset: 3"),
        (b"instances = [1, 2]", "JSON Parse error: Invalid value. at offset: 0"),
        (b'{"a":1', "JSON Parse error: Missing a comma or '}' after an object member. at offset: 6"),
        (b'{"a":1 "b":2}', "JSON Parse error: Missing a comma or '}' after an object member. at offset: 7"),
        (b"[1", "JSON Parse error: Missing a comma or ']' after an array element. at offset: 2"),
        (b"[1 2]", "JSON Parse error: Missing a comma or ']' after an array element. at offset: 3"),
        (b"{", "JSON Parse error: Missing a name for object member. at offset: 1"),
        (b"{1:2}", "JSON Parse error: Missing a name for object member. at offset: 1"),
        (b'{"a":1,}', "JSON Parse error: Missing a name for object member. at offset: 7"),
        (b'{"a" 1}', "JSON Parse error: Missing a colon after a name of object member. at offset: 5"),
        (b'{"a":', "JSON Parse error: Invalid value. at offset: 5"),
        (b"[1,]", "JSON Parse error: Invalid value. at offset: 3"),
        (b"[nul]", "JSON Parse error: Invalid value. at offset: 4"),
        (b"[-]", "JSON Parse error: Invalid value. at offset: 2"),
        (b"[Nax]", "JSON Parse error: Invalid value. at offset: 3"),
        (b"[Infinit]", "JSON Parse error: Invalid value. at offset: 8"),
        (b'["\\x"]', "JSON Parse error: Invalid escape character in string. at offset: 2"),
        (b'["\\u12G4"]', "JSON Parse error: Incorrect hex digit after \\u escape in string. at offset: 2"),
        (b'["\\ud800"]', "JSON Parse error: The surrogate pair in string is invalid. at offset: 2"),
        (b'["\\udc00"]', "JSON Parse error: The surrogate pair in string is invalid. at offset: 2"),
        (b'["a\x01"]', "JSON Parse error: Invalid encoding in string. at offset: 3"),
        (b'["a', "JSON Parse error: Missing a closing quotation mark in string. at offset: 3"),
        (b'{"k": "\xc3\xa9\xff"}', "JSON Parse error: Invalid encoding in string. at offset: 9"),
        (b"[1.]", "JSON Parse error: Miss fraction part in number. at offset: 3"),
        (b"[1e+]", "JSON Parse error: Miss exponent in number. at offset: 4"),
        (b"[1e400]", "JSON Parse error: Number too big to be stored in double. at offset: 1"),
        (b"\xef\xbb\xbf{}", "JSON Parse error: Invalid value. at offset: 0"),
    ],
)
def test_parse_errors_match_rapidjson(body: bytes, message: str) -> None:
    assert parse_error(body) == message


def test_offsets_count_bytes_not_characters() -> None:
    # "é" is two bytes: rapidjson offsets are byte offsets into the body.
    assert parse_error('{"é": 1,}'.encode()) == "JSON Parse error: Missing a name for object member. at offset: 9"


def test_top_level_must_be_an_object() -> None:
    assert parse_error(b"[1, 2]") == "JSON Value: [1, 2] Is not object"
    assert parse_error(b'"x"') == 'JSON Value: "x" Is not object'
    assert parse_error(b"1.5") == "JSON Value: 1.5 Is not object"


def test_nan_and_infinity_tokens() -> None:
    values = loads(b"[NaN, Inf, -Inf, Infinity, -Infinity, -NaN, 1]")
    assert math.isnan(values[0]) and math.isnan(values[5])
    assert values[1:5] == [math.inf, -math.inf, math.inf, -math.inf]
    assert values[6] == 1 and type(values[6]) is int


def test_trailing_data_after_the_first_value_is_ignored() -> None:
    assert parse_body(b'{"instances": [1]} garbage') == {"instances": [1]}
    assert parse_body(b'{"instances": [NaN]} {') == {"instances": [pytest.approx(math.nan, nan_ok=True)]}
    # A NUL byte ends the input, as for rapidjson's memory stream.
    assert parse_body(b'{"a": 1}\x00\xff\xfe') == {"a": 1}


def test_integers_and_doubles_follow_rapidjson() -> None:
    values = loads(
        b"[NaN, 18446744073709551615, 18446744073709551616, -9223372036854775808, -9223372036854775809, 1.0]"
    )
    assert values[1] == 18446744073709551615 and type(values[1]) is int
    assert type(values[2]) is float  # beyond uint64: rapidjson stores a double
    assert values[3] == -(1 << 63) and type(values[3]) is int
    assert type(values[4]) is float and type(values[5]) is float


def test_strings_with_escapes_and_unicode() -> None:
    assert loads(b'[NaN, "x\\u00e9\\ud83d\\ude00\\n\\/", "\xc3\xa9"]')[1:] == ["xé😀\n/", "é"]


def test_every_parser_tier_gives_the_same_document() -> None:
    body = b'{"a": [1, 2.5, "s", true, false, null, {"b": []}], "c": {}}'
    expected: dict[str, Any] = {"a": [1, 2.5, "s", True, False, None, {"b": []}], "c": {}}
    assert loads(body) == expected  # orjson
    assert loads(body + b" trailing") == expected  # stdlib fallback
    assert loads(body.replace(b"1,", b"1 ,", 1) + b"\x00") == expected  # NUL: stdlib on the cut text
    assert loads(body.replace(b'"s"', b'"\\ud83d\\ude00"')) == {**expected, "a": [1, 2.5, "😀", *expected["a"][3:]]}


def test_500000_deep_nesting_parses_without_recursion() -> None:
    depth = 500_000
    doc = parse_body(b'{"instances":[1], "nested": ' + b"[" * depth + b"]" * depth + b"}")
    assert doc["instances"] == [1]
    inner = doc["nested"]
    for _ in range(depth - 1):
        inner = inner[0]
    assert inner == []


def test_deep_signature_name_reports_the_truncated_document() -> None:
    depth = 500_000
    doc = parse_body(b'{"signature_name": ' + b"[" * depth + b"]" * depth + b"}")
    with pytest.raises(InvalidArgument) as info:
        signature_name_of(doc)
    message = info.value.message
    assert message.endswith(" not formatted correctly. 'signature_name' key must be a string value.")
    assert message.startswith('JSON Value: {\n    "signature_name": [[[[')
    assert len(message.encode()) < 256 + 100


def test_invalid_utf8_outside_a_string_is_an_invalid_value() -> None:
    assert parse_error(b'{"a": \xff}') == "JSON Parse error: Invalid value. at offset: 6"
