"""The text-proto config loader: any file gives models or one ConfigError, never a crash.

Inputs are built from the grammar's own pieces (so many reach deep into the validation), plus
random text and truncations of a valid file (a writer caught half-way).
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mlsrv.config_loader import parse_model_config_text
from mlsrv.errors import ConfigError

VALID = """model_config_list {
  config {
    name: "m"
    base_path: "/models/m"
    model_platform: "tensorflow"
    model_version_policy { specific { versions: 1 versions: 2 } }
    version_labels { key: "stable" value: 1 }
  }
  config { name: "n" base_path: "/models/n" }
}
"""
PIECES = [
    "model_config_list", "config", "{", "}", ":", "name", "base_path", "model_platform", "model_type", "TENSORFLOW",
    '"m"', '"/models/m"', '"rel"', '"tensorflow"', '"tflite"', "model_version_policy", "latest", "all", "specific",
    "num_versions", "versions", "version_labels", "key", "value", "1", "-1", "99999999999999999999",
    "custom_model_config",
    '"\\xff"', "#", "\n", "[", "]", "<", ">", "logging_config",
]


@given(st.lists(st.sampled_from(PIECES), max_size=40).map(" ".join))
def test_grammar_pieces(text: str) -> None:
    try:
        models = parse_model_config_text(text, source="models.config")
    except ConfigError as error:
        assert "\n" not in error.message.strip()
        return
    assert isinstance(models, tuple)


@given(st.text(max_size=300))
def test_random_text(text: str) -> None:
    try:
        parse_model_config_text(text, source="models.config")
    except ConfigError:
        pass


@given(st.integers(min_value=0, max_value=len(VALID)))
def test_every_truncation_of_a_valid_file(cut: int) -> None:
    try:
        models = parse_model_config_text(VALID[:cut], source="models.config")
    except ConfigError:
        return
    assert len(models) <= 2


@given(st.integers(min_value=1, max_value=20_000))
def test_deep_nesting(depth: int) -> None:
    try:
        parse_model_config_text("model_config_list { " * depth + "}" * depth, source="models.config")
    except ConfigError:
        pass
