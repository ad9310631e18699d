"""``--input_exprs``: any expression evaluates within the whitelist and caps, or is one UsageError."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mlsrv.cli.input_exprs import evaluate
from mlsrv.errors import UsageError

TOKENS = [
    "np", ".", "array", "ones", "zeros", "full", "arange", "linspace", "eye", "random", "randint", "rand", "(", ")",
    "[", "]", "{", "}", ",", ":", "=", "+", "-", "*", "**", "/", "1", "0", "-1", "2.5", "1e308", "10**9", "'a'",
    "b'x'", "dtype", "np.float32", "np.int64", "np.uint8", "None", "True", "__import__", "os", "lambda", "x", "if",
    "for", "in", "not", "1j", "...", "shape", "np.nan",
]


@given(st.lists(st.sampled_from(TOKENS), max_size=25).map("".join))
def test_token_soup(expression: str) -> None:
    try:
        evaluate(expression, "--input_exprs x")
    except UsageError as error:
        assert error.message.startswith("--input_exprs x: ")
        assert "\n" not in error.message


@given(st.text(max_size=200))
def test_random_text(expression: str) -> None:
    try:
        evaluate(expression, "--input_exprs x")
    except UsageError as error:
        assert "\n" not in error.message


@given(st.sampled_from(["+", "-", "~", "not ", "(", "["]), st.integers(min_value=1, max_value=20_000))
def test_deep_nesting(prefix: str, depth: int) -> None:
    closing = {"(": ")", "[": "]"}.get(prefix, "")
    try:
        evaluate(prefix * depth + "1" + closing * depth, "--input_exprs x")
    except UsageError:
        pass
