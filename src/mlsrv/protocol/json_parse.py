"""JSON parsing with TF Serving's grammar and error messages (rapidjson, iterative, NaN/Inf, stop when done).

TF Serving parses with rapidjson's iterative parser and ``kParseNanAndInfFlag``: it accepts ``NaN``,
``Inf``, ``Infinity``, ``-Inf`` and ``-Infinity``, ignores anything after the first complete value,
survives any nesting depth, and reports errors as ``JSON Parse error: <message> at offset: <byte>``.

Three tiers keep the common case fast: ``orjson`` (strict JSON, depth <= 1024), then the stdlib
decoder (NaN/Infinity tokens, trailing data), then :func:`_parse_pure`, an iterative parser that
follows rapidjson token by token, so it gives the same messages and offsets and has no depth limit.
A NUL byte ends the input, as it does for rapidjson's memory stream.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

import orjson

from mlsrv.errors import InvalidArgument
from mlsrv.protocol.json_value import INT64_MIN, UINT64_MAX

_WS: Final = re.compile(r"[ \t\n\r]*")
_DIGITS: Final = re.compile(r"[0-9]*")
_STR_CHUNK: Final = re.compile(r'[^"\\\x00-\x1f\udc80-\udcff]*')
# A \u escape of a UTF-16 surrogate: the stdlib decoder accepts lone ones, rapidjson does not.
_SURROGATE_ESCAPE: Final = re.compile(r"\\u[dD][89a-fA-F]")
_SIMPLE_ESCAPES: Final = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_HEX: Final = frozenset("0123456789abcdefABCDEF")
_SPACE: Final = " \t\n\r"

EMPTY: Final = "The document is empty."
INVALID_VALUE: Final = "Invalid value."
MISS_NAME: Final = "Missing a name for object member."
MISS_COLON: Final = "Missing a colon after a name of object member."
MISS_COMMA_OBJECT: Final = "Missing a comma or '}' after an object member."
MISS_COMMA_ARRAY: Final = "Missing a comma or ']' after an array element."
BAD_HEX: Final = "Incorrect hex digit after \\u escape in string."
BAD_SURROGATE: Final = "The surrogate pair in string is invalid."
BAD_ESCAPE: Final = "Invalid escape character in string."
MISS_QUOTE: Final = "Missing a closing quotation mark in string."
BAD_ENCODING: Final = "Invalid encoding in string."
TOO_BIG: Final = "Number too big to be stored in double."
MISS_FRACTION: Final = "Miss fraction part in number."
MISS_EXPONENT: Final = "Miss exponent in number."


class _ParseError(Exception):
    """Internal: a rapidjson error at a character offset of the decoded text."""

    def __init__(self, message: str, pos: int) -> None:
        super().__init__(message)
        self.message = message
        self.pos = pos


class ExactParseNeeded(Exception):
    """orjson refused the body and ``loads(..., exact=False)`` was asked not to run the slow parser."""


def loads(body: bytes | bytearray | memoryview | str, *, exact: bool = True) -> Any:
    """Parse a request body as TF Serving does; raises InvalidArgument with its exact messages.

    Returns plain Python values (dict, list, str, int, float, bool, None); NaN/Inf become floats.
    orjson parses what it accepts; the rest (NaN, Infinity, and every malformed body, for TF's
    error text) goes through the exact parser, which is pure Python (~0.5 ms per KiB): with
    ``exact=False`` that case raises :class:`ExactParseNeeded` instead, so a caller on the event
    loop can run it elsewhere.
    """
    if not body:
        raise InvalidArgument("JSON Parse error: The document is empty")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if not exact:
            raise ExactParseNeeded from None
        return _fallback(body, str(exc))


def _fallback(body: bytes | bytearray | memoryview | str, orjson_error: str) -> Any:
    if isinstance(body, str):
        text = body
    else:
        try:
            text = bytes(body).decode("utf-8")
        except UnicodeDecodeError:
            # Invalid bytes are kept as lone surrogates; the parser reports them where they sit.
            return _parse_reporting(bytes(body).decode("utf-8", "surrogateescape"))
    nul = text.find("\x00")
    if nul >= 0:
        text = text[:nul]
    if "infinity" not in orjson_error and not _SURROGATE_ESCAPE.search(text):
        start = _WS.match(text).end()  # type: ignore[union-attr]
        if start < len(text):
            try:
                return json.JSONDecoder(parse_int=_integer).raw_decode(text, start)[0]
            except (ValueError, RecursionError):
                pass
    return _parse_reporting(text)


def _integer(token: str) -> int | float:
    """rapidjson keeps integers in int64..uint64 and stores larger ones as doubles."""
    if len(token) <= 21:
        value = int(token)
        if INT64_MIN <= value <= UINT64_MAX:
            return value
    number = float(token)
    if number in (float("inf"), float("-inf")):
        raise ValueError("number too big")  # let the exact parser report it
    return number


def _parse_reporting(text: str) -> Any:
    try:
        return _parse_pure(text)
    except _ParseError as exc:
        offset = len(text[: exc.pos].encode("utf-8", "surrogateescape"))
        raise InvalidArgument(f"JSON Parse error: {exc.message} at offset: {offset}") from None


def _parse_pure(text: str) -> Any:
    """rapidjson's iterative parse (``kParseStopWhenDoneFlag``): an explicit stack, no recursion."""
    n = len(text)
    ws = _WS.match
    pos = ws(text, 0).end()  # type: ignore[union-attr]
    if pos >= n:
        raise _ParseError(EMPTY, pos)
    stack: list[Any] = []
    keys: list[str] = []
    value: Any
    while True:
        c = text[pos] if pos < n else ""
        if c == "[":
            pos += 1
            if pos < n and text[pos] in _SPACE:
                pos = ws(text, pos).end()  # type: ignore[union-attr]
            if pos < n and text[pos] == "]":
                value, pos = [], pos + 1
            else:
                stack.append([])
                keys.append("")
                continue
        elif c == "{":
            pos = ws(text, pos + 1).end()  # type: ignore[union-attr]
            if pos < n and text[pos] == "}":
                value, pos = {}, pos + 1
            else:
                key, pos = _member_key(text, pos)
                stack.append({})
                keys.append(key)
                continue
        elif c == '"':
            value, pos = _string(text, pos)
        elif c == "t":
            value, pos = True, _literal(text, pos, "true")
        elif c == "f":
            value, pos = False, _literal(text, pos, "false")
        elif c == "n":
            value, pos = None, _literal(text, pos, "null")
        else:
            value, pos = _number(text, pos)
        # A value is complete: store it, then close every container that ends here.
        while True:
            if not stack:
                return value
            top = stack[-1]
            if pos < n and text[pos] in _SPACE:
                pos = ws(text, pos).end()  # type: ignore[union-attr]
            c = text[pos] if pos < n else ""
            if type(top) is list:
                top.append(value)
                if c == ",":
                    pos += 1
                    if pos < n and text[pos] in _SPACE:
                        pos = ws(text, pos).end()  # type: ignore[union-attr]
                    break
                if c == "]":
                    value, pos = stack.pop(), pos + 1
                    keys.pop()
                    continue
                raise _ParseError(MISS_COMMA_ARRAY, pos)
            top[keys[-1]] = value
            if c == ",":
                keys[-1], pos = _member_key(text, ws(text, pos + 1).end())  # type: ignore[union-attr]
                break
            if c == "}":
                value, pos = stack.pop(), pos + 1
                keys.pop()
                continue
            raise _ParseError(MISS_COMMA_OBJECT, pos)


def _member_key(text: str, pos: int) -> tuple[str, int]:
    """``"name"`` ``:`` with the whitespace after the colon skipped."""
    if pos >= len(text) or text[pos] != '"':
        raise _ParseError(MISS_NAME, pos)
    key, pos = _string(text, pos)
    pos = _WS.match(text, pos).end()  # type: ignore[union-attr]
    if pos >= len(text) or text[pos] != ":":
        raise _ParseError(MISS_COLON, pos)
    return key, _WS.match(text, pos + 1).end()  # type: ignore[union-attr]


def _literal(text: str, pos: int, word: str) -> int:
    """``true``/``false``/``null``; a mismatch is reported after the characters that did match."""
    end = pos + 1
    for ch in word[1:]:
        if end >= len(text) or text[end] != ch:
            raise _ParseError(INVALID_VALUE, end)
        end += 1
    return end


def _consume(text: str, pos: int, word: str) -> tuple[bool, int]:
    """Consume ``word`` one character at a time, like rapidjson's ``Consume`` chain."""
    for ch in word:
        if pos >= len(text) or text[pos] != ch:
            return False, pos
        pos += 1
    return True, pos


def _number(text: str, start: int) -> tuple[Any, int]:
    n = len(text)
    minus = text.startswith("-", start)
    pos = start + 1 if minus else start
    c = text[pos] if pos < n else ""
    if c == "N" or c == "I":
        if c == "N":
            ok, pos = _consume(text, pos, "NaN")
            value = float("nan")
        else:
            ok, pos = _consume(text, pos, "Inf")
            value = float("-inf") if minus else float("inf")
            if ok and pos < n and text[pos] == "i":
                ok, pos = _consume(text, pos, "inity")
        if not ok:
            raise _ParseError(INVALID_VALUE, pos)
        return value, pos
    if c == "0":
        pos += 1
    elif "1" <= c <= "9":
        pos = _DIGITS.match(text, pos + 1).end()  # type: ignore[union-attr]
    else:
        raise _ParseError(INVALID_VALUE, pos)
    is_double = False
    if pos < n and text[pos] == ".":
        is_double = True
        pos += 1
        if pos >= n or not "0" <= text[pos] <= "9":
            raise _ParseError(MISS_FRACTION, pos)
        pos = _DIGITS.match(text, pos).end()  # type: ignore[union-attr]
    if pos < n and text[pos] in "eE":
        is_double = True
        pos += 1
        if pos < n and text[pos] in "+-":
            pos += 1
        if pos >= n or not "0" <= text[pos] <= "9":
            raise _ParseError(MISS_EXPONENT, pos)
        pos = _DIGITS.match(text, pos).end()  # type: ignore[union-attr]
    token = text[start:pos]
    try:
        value = float(token) if is_double else _integer(token)
    except ValueError:
        value = float("inf")
    if value in (float("inf"), float("-inf")):
        raise _ParseError(TOO_BIG, start)
    return value, pos


def _hex4(text: str, pos: int, escape: int) -> int:
    digits = text[pos : pos + 4]
    if len(digits) < 4 or not all(ch in _HEX for ch in digits):
        raise _ParseError(BAD_HEX, escape)
    return int(digits, 16)


def _string(text: str, pos: int) -> tuple[str, int]:
    """A JSON string starting at the quote at ``pos``; returns the value and the position after it."""
    n = len(text)
    pos += 1
    parts: list[str] = []
    while True:
        end = _STR_CHUNK.match(text, pos).end()  # type: ignore[union-attr]
        if end > pos:
            parts.append(text[pos:end])
            pos = end
        c = text[pos] if pos < n else "\x00"
        if c == '"':
            return "".join(parts), pos + 1
        if c == "\\":
            escape = pos
            e = text[pos + 1] if pos + 1 < n else ""
            if e in _SIMPLE_ESCAPES and e:
                parts.append(_SIMPLE_ESCAPES[e])
                pos += 2
            elif e == "u":
                code = _hex4(text, pos + 2, escape)
                pos += 6
                if 0xD800 <= code <= 0xDBFF:
                    if not text.startswith("\\u", pos):
                        raise _ParseError(BAD_SURROGATE, escape)
                    low = _hex4(text, pos + 2, escape)
                    if not 0xDC00 <= low <= 0xDFFF:
                        raise _ParseError(BAD_SURROGATE, escape)
                    code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
                    pos += 6
                elif 0xDC00 <= code <= 0xDFFF:
                    raise _ParseError(BAD_SURROGATE, escape)
                parts.append(chr(code))
            else:
                raise _ParseError(BAD_ESCAPE, escape)
        elif c == "\x00":
            raise _ParseError(MISS_QUOTE, pos)
        else:  # a control character, or an invalid UTF-8 byte kept as a lone surrogate
            raise _ParseError(BAD_ENCODING, pos)
