"""JSON values as TF Serving (rapidjson) sees and prints them, for its exact error messages.

TF Serving reports bad input as ``JSON Value: <v> ...`` where ``<v>`` is rapidjson's PrettyWriter
output (objects multi-line with a 4-space indent, arrays on one line) cut at 256 bytes, and it
formats top-level decimals with its own ``WriteDecimal`` (``%g``, falling back to ``%.9g``/``%.17g``).
This module reproduces that text, the JSON type names, the integer/double split rapidjson makes
(integers outside int64..uint64 are doubles) and absl's base64 decoder. Everything is iterative,
so a 500000-deep document prints its first 256 bytes without recursion.
"""

from __future__ import annotations

import binascii
import math
import re
from collections.abc import Mapping
from typing import Any, Final

import numpy as np

from mlsrv.errors import InvalidArgument

MAX_DEBUG_BYTES: Final = 256
INT64_MIN: Final = -(1 << 63)
INT64_MAX: Final = (1 << 63) - 1
UINT64_MAX: Final = (1 << 64) - 1
FLOAT32_MAX: Final = 3.4028234e38  # rapidjson's IsFloat() bound
_INDENT: Final = "    "
_END: Final = object()  # iterator sentinel

_ESCAPES: Final[dict[int, str]] = {
    **{c: f"\\u{c:04X}" for c in range(0x20)},
    ord("\b"): "\\b",
    ord("\f"): "\\f",
    ord("\n"): "\\n",
    ord("\r"): "\\r",
    ord("\t"): "\\t",
    ord('"'): '\\"',
    ord("\\"): "\\\\",
}
_B64_BODY: Final = re.compile(rb"[A-Za-z0-9+/]*")
_B64_SPACE: Final = b" \t\n\v\f\r"  # absl::ascii_isspace


def is_json_double(value: Any) -> bool:
    """True for values rapidjson stores as a double: decimals and integers beyond int64/uint64."""
    t = type(value)
    return t is float or (t is int and not INT64_MIN <= value <= UINT64_MAX)


def json_type_name(value: Any) -> str:
    """rapidjson's type names as TF Serving prints them (``Type: Number``)."""
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def escape_string(text: str) -> str:
    """A quoted JSON string as rapidjson writes it (uppercase ``\\u00XX``, ``/`` and non-ASCII kept)."""
    return '"' + text.translate(_ESCAPES) + '"'


def format_decimal(value: float, *, single: bool) -> str:
    """TF Serving's ``WriteDecimal``: ``%g`` when it round-trips, else ``%.9g``/``%.17g``; ``.0`` for whole numbers."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "-Infinity" if value < 0 else "Infinity"
    text = f"{value:g}"
    back = float(text)
    if single:
        with np.errstate(over="ignore"):
            back = float(np.float32(back))
    if back != value:
        text = f"{value:.9g}" if single else f"{value:.17g}"
    if "." not in text and "e" not in text:
        text += ".0"
    return text


def rapidjson_double(value: float) -> str | None:
    """rapidjson ``Writer::Double`` text (shortest digits, ``1e21``, ``1.0``); None for NaN/Inf, which it refuses."""
    if not math.isfinite(value):
        return None
    if value == 0:
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    mantissa, _, exp = repr(abs(value)).partition("e")
    whole, _, frac = mantissa.partition(".")
    digits = (whole + frac).lstrip("0")
    k = (int(exp) if exp else 0) - len(frac)
    stripped = digits.rstrip("0")
    k += len(digits) - len(stripped)
    digits = stripped
    length = len(digits)
    kk = length + k
    sign = "-" if value < 0 else ""
    if 0 <= k and kk <= 21:
        body = digits + "0" * k + ".0"
    elif 0 < kk <= 21:
        body = digits[:kk] + "." + digits[kk:]
    elif -6 < kk <= 0:
        body = "0." + "0" * -kk + digits
    elif length == 1:
        body = digits + "e" + str(kk - 1)
    else:
        body = digits[0] + "." + digits[1:] + "e" + str(kk - 1)
    return sign + body


def _nested_scalar(value: Any) -> str | None:
    """Text of a scalar inside a container (rapidjson ``Accept``); None aborts the print like rapidjson."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return escape_string(value)
    if is_json_double(value):
        return rapidjson_double(float(value))
    return str(value)


def _top_scalar(value: Any) -> str:
    """Text of a top-level scalar: TF writes decimals itself so NaN/Inf print (``JsonValueToString``)."""
    if is_json_double(value):
        d = float(value)
        if -FLOAT32_MAX <= d <= FLOAT32_MAX:
            with np.errstate(over="ignore"):
                return format_decimal(float(np.float32(d)), single=True)
        return format_decimal(d, single=False)
    text = _nested_scalar(value)
    return "" if text is None else text


def value_to_string(value: Any, limit: int = MAX_DEBUG_BYTES) -> str:
    """TF Serving's ``JsonValueToString``: rapidjson pretty text with one-line arrays, cut at ``limit`` bytes."""
    if not isinstance(value, (dict, list)):
        return _truncate(_top_scalar(value), limit)
    parts: list[str] = []
    size = 0
    # Each frame: [is_array, iterator, values written so far].
    frames: list[list[Any]] = []
    pending: Any = value
    has_pending = True
    while True:
        if has_pending:
            has_pending = False
            prefix = ", " if frames and frames[-1][0] and frames[-1][2] else ""
            if isinstance(pending, list):
                chunk = prefix + "["
                frames.append([True, iter(pending), 0])
            elif isinstance(pending, dict):
                chunk = prefix + "{"
                frames.append([False, iter(pending.items()), 0])
            else:
                text = _nested_scalar(pending)
                if text is None:  # rapidjson aborts the whole print on NaN/Inf inside a container
                    parts.append(prefix)
                    break
                chunk = prefix + text
                frames[-1][2] += 1
            parts.append(chunk)
            size += len(chunk)
            if size >= limit:
                break
        if not frames:
            break
        frame = frames[-1]
        item: Any = next(frame[1], _END)
        if item is _END:
            frames.pop()
            if frame[0]:
                chunk = "]"
            else:
                chunk = ("\n" + _INDENT * len(frames) if frame[2] else "") + "}"
            parts.append(chunk)
            size += len(chunk)
            if not frames:
                break
            frames[-1][2] += 1
            continue
        if frame[0]:
            pending = item
        else:
            key, pending = item
            chunk = ("," if frame[2] else "") + "\n" + _INDENT * len(frames) + escape_string(key) + ": "
            parts.append(chunk)
            size += len(chunk)
        has_pending = True
    return _truncate("".join(parts), limit)


def _truncate(text: str, limit: int) -> str:
    raw = text.encode("utf-8", "surrogatepass")
    if len(raw) <= limit:
        return text
    return raw[:limit].decode("utf-8", "ignore")


def absl_b64decode(text: str) -> bytes | None:
    """absl ``Base64Unescape``: standard alphabet, whitespace skipped, padding optional but exact if present."""
    try:
        raw = text.encode("ascii")
    except UnicodeEncodeError:
        return None
    raw = raw.translate(None, _B64_SPACE)
    body = raw.rstrip(b"=.")
    if not _B64_BODY.fullmatch(body):
        return None
    remainder = len(body) % 4
    if remainder == 1:
        return None
    required = (4 - remainder) % 4
    if len(raw) - len(body) not in (0, required):
        return None
    return binascii.a2b_base64(body + b"=" * required)


def is_b64_object(value: Any) -> bool:
    """``{"b64": "<string>"}`` and nothing else (TF's ``IsValBase64Object``)."""
    return type(value) is dict and len(value) == 1 and type(value.get("b64")) is str


def decode_b64_object(value: Any) -> bytes:
    """TF's ``JsonDecodeBase64Object``; raises InvalidArgument with its messages."""
    if not is_b64_object(value):
        raise InvalidArgument(f"JSON Value: {value_to_string(value)} not formatted correctly for base64 data")
    decoded = absl_b64decode(value["b64"])
    if decoded is None:
        raise InvalidArgument("Unable to base64 decode")
    return decoded


def signature_name_of(doc: Mapping[str, Any]) -> str:
    """The requested signature name (step 2); empty means the default signature."""
    if "signature_name" not in doc:
        return ""
    name = doc["signature_name"]
    if type(name) is not str:
        raise InvalidArgument(
            f"JSON Value: {value_to_string(doc)} not formatted correctly. 'signature_name' key must be a string value."
        )
    return name
