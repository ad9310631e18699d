"""The --input_exprs whitelist evaluator and the --inputs/--input_examples parsers (no TensorFlow)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from mlsrv.cli.app import app
from mlsrv.cli.input_exprs import (
    MAX_BYTES,
    MAX_ELEMENTS,
    FileInput,
    evaluate,
    parse_input_examples,
    parse_input_exprs,
    parse_inputs,
    split_items,
)
from mlsrv.errors import UsageError


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("1", 1),
        ("-2.5", -2.5),
        ("+3", 3),
        ("1e3", 1000.0),
        ("'a'", "a"),
        ("b'\\x00'", b"\x00"),
        ("[True, None]", [True, None]),
        ("(1, [2, -3])", (1, [2, -3])),
        ('{"x": [1.0]}', {"x": [1.0]}),
    ],
)
def test_literals(expression: str, expected: Any) -> None:
    assert evaluate(expression) == expected


def test_numpy_constructors() -> None:
    array = evaluate("np.array([[1.0], [5.0]])")
    assert isinstance(array, np.ndarray) and array.tolist() == [[1.0], [5.0]]
    assert evaluate("numpy.ones((2, 3), dtype=numpy.float32)").dtype == np.float32
    assert evaluate("np.zeros(shape=(2,), dtype='int64')").tolist() == [0, 0]
    assert evaluate("np.full((2,), 7, dtype=np.int32)").tolist() == [7, 7]
    assert evaluate("np.asarray([1, 2], dtype=np.uint8)").dtype == np.uint8
    assert evaluate("np.arange(1, 10, 4)").tolist() == [1, 5, 9]
    assert evaluate("np.linspace(0, 1, num=3)").tolist() == [0.0, 0.5, 1.0]
    assert evaluate("np.eye(2, dtype=np.bool_)").tolist() == [[True, False], [False, True]]
    assert evaluate("np.array(['a', 'b'], dtype=np.object_)").dtype == object


def test_random_is_whitelisted_and_reproducible() -> None:
    first = evaluate("np.random.rand(2, 3)")
    assert first.shape == (2, 3)
    np.testing.assert_array_equal(first, evaluate("np.random.rand(2, 3)"))
    assert evaluate("np.random.randn(4)").shape == (4,)
    ints = evaluate("np.random.randint(0, 5, size=(10,), dtype=np.int64)")
    assert ints.dtype == np.int64 and 0 <= ints.min() and ints.max() < 5


MARKER = "pwned_marker"


@pytest.mark.parametrize(
    "expression",
    [
        f"__import__('os').system('touch {MARKER}')",
        f"open('{MARKER}', 'w')",
        f"np.save('{MARKER}', 1)",
        f"np.array(1).tofile('{MARKER}')",
        f"np.lib.npyio.__builtins__['open']('{MARKER}', 'w')",
        "np.__class__",
        "np.array.__globals__",
        "np.random.__dict__",
        "np.ones.__call__(1)",
        "().__class__.__bases__[0].__subclasses__()",
        "().__class__.__bases__",
        f"(lambda: __import__('os').system('touch {MARKER}'))()",
        f"[__import__('os').system('touch {MARKER}') for _ in (1,)]",
        f"f\"{{__import__('os').system('touch {MARKER}')}}\"",
        "getattr(np, 'load')",
        "np.load('x.npy')",
        "np.float32(1)",
        "os",
        "x",
        "np",
        "np.array([1])[0]",
        "np.ones(*[2])",
        "np.ones(2, **{'dtype': 'float32'})",
        "np.ones(2, like=np.array(1))",
        "{**{}}",
        "(y := 1)",
        "1 if True else 2",
        "1 + 1",
        "not True",
        "-'a'",
        "np.ones((100000, 100000))",
        "np.random.rand(100000, 100000)",
        "np.arange(1e12)",
        "np.ones(-1)",
        "[1, 2",
    ],
)
def test_anything_outside_the_whitelist_is_refused(
    expression: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError) as raised:
        evaluate(expression, "--input_exprs x")
    assert raised.value.message.startswith("--input_exprs x: ")
    assert "\n" not in raised.value.message
    assert not (tmp_path / MARKER).exists()


def test_cli_refuses_before_loading_anything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    expression = f"x=__import__('os').system('touch {MARKER}')"
    result = CliRunner().invoke(app, ["run", "--dir", str(tmp_path / "none"), "--input_exprs", expression])
    assert result.exit_code == 2
    assert result.stderr.startswith("UsageError: --input_exprs x: only np.array")
    assert "Traceback" not in result.stderr + result.stdout
    assert os.listdir(tmp_path) == []


def test_split_items_respects_quotes_and_brackets() -> None:
    text = "a=np.array([1, 2]);b='x;y'; c = {\"k\": [1]} ;;"
    assert split_items(text, "--input_exprs") == [("a", "np.array([1, 2])"), ("b", "'x;y'"), ("c", '{"k": [1]}')]
    assert split_items("s='it\\'s;'", "--x") == [("s", "'it\\'s;'")]


@pytest.mark.parametrize(
    ("text", "message"),
    [("x", "format is incorrect"), ("=1", "format is incorrect"), ("x=", "format is incorrect")],
)
def test_split_items_errors(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        split_items(text, "--input_exprs")


def test_same_key_twice_is_an_error() -> None:
    with pytest.raises(UsageError, match="input key 'x' is given more than once"):
        parse_input_exprs("x=1;x=2")


def test_parse_inputs() -> None:
    assert parse_inputs("x=x.npy;y=data.npz[y];z = /tmp/a b.npz") == {
        "x": FileInput("x.npy"),
        "y": FileInput("data.npz", "y"),
        "z": FileInput("/tmp/a b.npz"),
    }
    with pytest.raises(UsageError, match="format is incorrect"):
        parse_inputs("x=a.npz[b][c]")


def test_parse_input_examples() -> None:
    parsed = parse_input_examples('inputs=[{"x": [1.0], "s": ["a"]}];other=[]')
    assert parsed == {"inputs": [{"x": [1.0], "s": ["a"]}], "other": []}
    with pytest.raises(UsageError, match="list of dicts"):
        parse_input_examples('inputs={"x": [1.0]}')
    with pytest.raises(UsageError, match="dict keys must be literals"):
        parse_input_examples("inputs=[{x: [1.0]}]")
    with pytest.raises(UsageError, match="Name is not allowed"):
        parse_input_examples('inputs=[{"x": [y]}]')


def test_limits() -> None:
    assert evaluate(f"np.zeros({MAX_ELEMENTS}, dtype=np.int8)").size == MAX_ELEMENTS  # calloc: cheap
    with pytest.raises(UsageError, match="arrays over"):
        evaluate(f"np.zeros({MAX_ELEMENTS + 1}, dtype=np.int8)")
    with pytest.raises(UsageError, match="expression longer than"):
        evaluate("1" * 100_001)


@pytest.mark.parametrize(
    "expression",
    [
        "np.arange(0, stop=10000000000)",  # keywords count like positional arguments
        "np.arange(start=0, stop=10000000000)",
        "np.arange(stop=10000000000)",
        "np.arange(0, 10000000000, step=1)",
        "np.arange(np.array(10000000000))",  # a 0-d array is a number to numpy
        "np.ones(shape=np.array([100000, 100000]))",  # and an array is a shape
        "np.zeros(np.array([100000, 100000]), dtype=np.int8)",
        "np.eye(np.array(100000))",
        "np.eye(2, M=100000000)",
        "np.full(shape=(100000, 100000), fill_value=1)",
        "np.linspace(0, 1, num=100000000)",
        "np.random.randint(0, 5, size=np.array([100000, 100000]))",
        "np.random.randint(low=0, high=5, size=(100000, 100000))",
    ],
)
def test_element_cap_counts_keyword_and_array_arguments(expression: str) -> None:
    with pytest.raises(UsageError, match=f"arrays over {MAX_ELEMENTS} elements are not allowed"):
        evaluate(expression, "--input_exprs x")


@pytest.mark.parametrize(
    "expression",
    [
        'np.ones((1000, 1000), dtype="U100000")',  # 10**6 elements, but 400 kB each
        'np.zeros(10000, dtype=[("a", "U100000")])',
        "np.full((10000, 1000), '" + "x" * 1000 + "')",  # fill_value sets the item size
        'np.array(np.zeros(3000), dtype="U100000")',
        "[np.zeros(40000000), np.zeros(40000000)]",  # the cap covers the whole expression (zeros: calloc, cheap)
    ],
)
def test_byte_cap_counts_item_sizes(expression: str) -> None:
    with pytest.raises(UsageError, match=f"arrays over {MAX_BYTES >> 20} MiB in all are not allowed"):
        evaluate(expression, "--input_exprs x")


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("np.arange(1j)", "stop must be a real number"),
        ("np.arange(1e400)", "stop must be finite"),
        ("np.arange(0, 10, step=0)", "step must not be 0"),
        ("np.arange(0, 10, 0)", "step must not be 0"),
        ("np.ones((2, 'a'))", "a shape must be an integer"),
        ("np.eye('3')", "N must be an integer"),
    ],
)
def test_arguments_the_cap_cannot_account_for_are_refused(expression: str, message: str) -> None:
    with pytest.raises(UsageError, match=message) as raised:
        evaluate(expression, "--input_exprs x")
    assert raised.value.message.startswith("--input_exprs x: ")


def test_keyword_forms_numpy_accepts_still_work() -> None:
    assert evaluate("np.arange(start=0, stop=3)").tolist() == [0, 1, 2]
    assert evaluate("np.arange(stop=3)").tolist() == [0, 1, 2]
    assert evaluate("np.arange(2, stop=5)").tolist() == [2, 3, 4]
    assert evaluate("np.arange(1, 2, step=0.25)").tolist() == [1.0, 1.25, 1.5, 1.75]
    assert evaluate("np.arange(10, 0, -3)").tolist() == [10, 7, 4, 1]
    assert evaluate("np.ones(shape=np.array([2, 3]))").shape == (2, 3)
    assert evaluate("np.eye(N=2, M=3)").shape == (2, 3)
    assert evaluate("np.random.randint(low=0, high=5, size=(4,))").shape == (4,)
    assert evaluate('np.array(["abc", "de"], dtype="U8")').dtype == np.dtype("U8")
    assert evaluate('np.full((2,), "ab", dtype=np.str_)').dtype.kind == "U"
    with pytest.raises(UsageError, match="requires stop"):
        evaluate("np.arange(start=3)")


@pytest.mark.parametrize(
    "expression",
    ["x=" + "+" * 3000 + "1", "x=" + "-" * 50_000 + "1", "x=" + "[" * 5000 + "]" * 5000, "x=1\x00"],
    ids=["3000 unary plus", "50000 unary minus", "5000 nested lists", "NUL"],
)
def test_pathological_expressions_are_usage_errors(expression: str) -> None:
    """Issue #10 item 12: the parser's own RecursionError/MemoryError/ValueError become exit 2, one line."""
    result = CliRunner().invoke(app, ["run", "--dir", "/nonexistent", "--input_exprs", expression])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("UsageError: --input_exprs x: ")
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr + result.stdout
