"""absl's boolean spellings for ``show`` and ``run`` (``--all=true``, ``--noall`` ...), without TensorFlow."""

from __future__ import annotations

import pytest
import typer

from mlsrv.cli.absl_bools import normalize_bool_args
from mlsrv.cli.app import app
from mlsrv.errors import ConfigError


def params(command: str) -> list[object]:
    group = typer.main.get_command(app)
    return list(group.commands[command].params)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--all=true"], ["--all"]),
        (["--all=TRUE", "--list_ops=0"], ["--all", "--nolist_ops"]),
        (["--all=false"], ["--noall"]),
        (["--list-ops=yes"], ["--list-ops"]),
        (["--json=true", "--json=false"], ["--json"]),  # no --nojson: false leaves the default
        (["--dir", "--all=true"], ["--dir", "--all=true"]),  # the value of --dir is left alone
        (["--dir=x", "--all=on"], ["--dir=x", "--all"]),
        (["--", "--all=true"], ["--", "--all=true"]),
        (["--noall", "--all"], ["--noall", "--all"]),
    ],
)
def test_show_flags(args: list[str], expected: list[str]) -> None:
    assert normalize_bool_args(params("show"), args) == expected


def test_run_flags() -> None:
    assert normalize_bool_args(params("run"), ["--overwrite=false", "--overwrite=1"]) == [
        "--nooverwrite",
        "--overwrite",
    ]
    assert normalize_bool_args(params("run"), ["--inputs", "--overwrite=true"]) == ["--inputs", "--overwrite=true"]


def test_bad_value_uses_tf_serving_wording() -> None:
    with pytest.raises(ConfigError, match="Illegal value 'maybe' specified for bool flag 'all'"):
        normalize_bool_args(params("show"), ["--all=maybe"])
