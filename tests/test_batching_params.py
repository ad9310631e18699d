"""BatchingParameters text-proto and TOML mapping -> BatchingOptions, with TF Serving's validation."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlsrv.batching_params import (
    DEFAULT_THREAD_POOL_NAME,
    FILE_THREAD_POOL_NAME,
    BatchingOptions,
    load_batching_parameters,
    parse_batching_parameters,
)
from mlsrv.errors import ConfigError

# An exact copy of TF Serving's testdata/batching_config.txt, so this runs without ../shared.
TF_BATCHING_CONFIG = """\
max_batch_size { value: 128 }
batch_timeout_micros { value: 0 }
max_enqueued_batches { value: 1000000 }
num_batch_threads { value: 8 }
"""


def check_tf_sample(o: BatchingOptions) -> None:
    assert o.max_batch_size == 128
    assert o.batch_timeout_s == 0.0
    assert o.max_enqueued_batches == 1_000_000
    assert o.num_batch_threads == 8
    assert o.thread_pool_name == FILE_THREAD_POOL_NAME  # TF's default when the file leaves it unset
    assert o.allowed_batch_sizes == ()
    assert not o.pad_variable_length_inputs and not o.enable_large_batch_splitting
    assert o.execution_batch_size == 128 and o.queue_capacity_rows == 128_000_000


@pytest.mark.reference
def test_parses_tf_servings_own_batching_config(reference_dir: Path) -> None:
    path = reference_dir / "batching_config.txt"
    assert path.read_text() == TF_BATCHING_CONFIG
    check_tf_sample(load_batching_parameters(path))


def test_parses_inline_copy_of_tf_sample() -> None:
    check_tf_sample(parse_batching_parameters(TF_BATCHING_CONFIG, source="batching.txt"))


def test_every_field_and_text_format_variants() -> None:
    text = """
        # comments are fine
        max_batch_size: { value: 8 }            # ':' before '{' is optional
        batch_timeout_micros { value: 2500 },   # ',' and ';' separate fields
        max_enqueued_batches { value: 4 };
        num_batch_threads { value: 2 }
        thread_pool_name { value: "pool_a" }
        allowed_batch_sizes: 2
        allowed_batch_sizes: [4, 8]
        pad_variable_length_inputs: true
        enable_large_batch_splitting { value: true }
        max_execution_batch_size { value: 8 }
    """
    o = parse_batching_parameters(text, source="b.txt")
    assert o == BatchingOptions(
        max_batch_size=8,
        batch_timeout_s=0.0025,
        max_enqueued_batches=4,
        num_batch_threads=2,
        thread_pool_name="pool_a",
        allowed_batch_sizes=(2, 4, 8),
        pad_variable_length_inputs=True,
        enable_large_batch_splitting=True,
        max_execution_batch_size=8,
    )


def test_empty_file_gives_tf_defaults() -> None:
    o = parse_batching_parameters("", source="b.txt")
    assert (o.max_batch_size, o.batch_timeout_s, o.max_enqueued_batches) == (1000, 0.0, 10)
    assert o.num_batch_threads == BatchingOptions().num_batch_threads >= 1
    assert o.thread_pool_name == "batch_threads"
    assert BatchingOptions().thread_pool_name == DEFAULT_THREAD_POOL_NAME == "model_server_batch_threads"


def test_max_execution_batch_size_only_counts_with_splitting() -> None:
    o = parse_batching_parameters("max_batch_size { value: 64 } max_execution_batch_size { value: 16 }", source="b.txt")
    assert o.execution_batch_size == 64
    split = dataclasses.replace(o, enable_large_batch_splitting=True)
    assert split.execution_batch_size == 16 and split.queue_capacity_rows == 160


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "max_batch_size { value: 8 } allowed_batch_sizes: [2, 4]",
            "b.txt: Last entry in allowed_batch_sizes must match max_batch_size; last entry was 4; expected 8",
        ),
        (
            "allowed_batch_sizes: [10, 100]",
            "b.txt: Last entry in allowed_batch_sizes must match max_batch_size; last entry was 100; expected 1000",
        ),
        (
            "max_batch_size { value: 8 } allowed_batch_sizes: [4, 2, 8]",
            "b.txt: allowed_batch_sizes entries must be monotonically increasing",
        ),
        (
            "max_batch_size { value: 8 } allowed_batch_sizes: [0, 8]",
            "b.txt: allowed_batch_sizes entries must be positive; got [0, 8]",
        ),
        ("num_batch_threads { value: 0 }", "b.txt: num_batch_threads must be positive; was 0"),
        ("max_batch_size { value: -1 }", "b.txt: max_batch_size must be positive; was -1"),
        ("batch_timeout_micros { value: -5 }", "b.txt: batch_timeout_micros must be non-negative; was -5"),
        (
            "enable_large_batch_splitting { value: true } max_enqueued_batches { value: 0 }",
            "b.txt: max_enqueued_batches must be positive; was 0",
        ),
        (
            "max_batch_size { value: 8 } enable_large_batch_splitting { value: true } "
            "max_execution_batch_size { value: 16 }",
            "b.txt: When enable_large_batch_splitting is true, input_batch_size_limit must be greater than "
            "or equal to max_execution_batch_size (max_batch_size is 8, max_execution_batch_size is 16).",
        ),
    ],
)
def test_invalid_values_use_tf_messages(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_batching_parameters(text, source="b.txt")
    assert info.value.message == message


def test_last_allowed_size_is_checked_against_max_batch_size_even_when_splitting() -> None:
    # TF Serving's WrapSessionForBatching compares with max_batch_size whatever the splitting setting.
    text = (
        "max_batch_size { value: 16 } enable_large_batch_splitting { value: true } "
        "max_execution_batch_size { value: 8 } allowed_batch_sizes: [4, 8]"
    )
    with pytest.raises(ConfigError, match="last entry was 8; expected 16"):
        parse_batching_parameters(text, source="b.txt")


def test_zero_max_enqueued_batches_is_rewritten_to_one_like_tf() -> None:
    o = parse_batching_parameters("max_enqueued_batches { value: 0 }", source="b.txt")
    assert o.max_enqueued_batches == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "max_batch_size { value: 8 }\n  max_batchsize { value: 1 }",
            'b.txt:2:3: Message type "tensorflow.serving.BatchingParameters" has no field named "max_batchsize".',
        ),
        (
            "max_batch_size: 8",
            "b.txt:1:17: 'max_batch_size: 8': Expected \"{\". (wrapped fields are written like "
            "max_batch_size { value: 128 })",
        ),
        ("max_batch_size { value: 8 }\nmax_batch_size { value: 9 }", "b.txt:2:"),
        ('thread_pool_name { value: "unterminated }', "b.txt:1:"),
    ],
)
def test_syntax_errors_name_file_and_position(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_batching_parameters(text, source="b.txt")
    assert info.value.message.startswith(message)


def test_load_reads_files_and_names_them_in_errors(tmp_path: Path) -> None:
    path = tmp_path / "batching.txt"
    path.write_text("max_batch_size { value: 32 }\nbatch_timeout_micros { value: 1000 }\n")
    o = load_batching_parameters(path)
    assert o.max_batch_size == 32 and o.batch_timeout_s == pytest.approx(0.001)
    with pytest.raises(ConfigError, match=r"missing\.txt: cannot read batching parameters"):
        load_batching_parameters(tmp_path / "missing.txt")
    path.write_text("num_batch_threads { value: 0 }")
    with pytest.raises(ConfigError) as info:
        load_batching_parameters(str(path))
    assert info.value.message == f"{os.fspath(path)}: num_batch_threads must be positive; was 0"


def test_from_mapping_takes_toml_values_with_proto_field_names() -> None:
    o = BatchingOptions.from_mapping(
        {
            "max_batch_size": 64,
            "batch_timeout_micros": 500,
            "max_enqueued_batches": 3,
            "num_batch_threads": 1,
            "thread_pool_name": "p",
            "allowed_batch_sizes": [8, 64],
            "pad_variable_length_inputs": True,
            "enable_large_batch_splitting": True,
            "max_execution_batch_size": 64,
        },
        source="mlsrv.toml [batching]",
    )
    assert o.batch_timeout_s == pytest.approx(0.0005)
    assert o.allowed_batch_sizes == (8, 64) and o.thread_pool_name == "p"
    assert BatchingOptions.from_mapping({}, source="t").max_batch_size == 1000


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"max_batch_size": "8"}, "t: max_batch_size: expected an integer, got '8'"),
        ({"max_batch_size": True}, "t: max_batch_size: expected an integer, got True"),
        ({"pad_variable_length_inputs": 1}, "t: pad_variable_length_inputs: expected true or false, got 1"),
        ({"thread_pool_name": 3}, "t: thread_pool_name: expected a string, got 3"),
        ({"allowed_batch_sizes": [1, "2"]}, "t: allowed_batch_sizes: expected a list of integers"),
        ({"batch_timeout_micros": -1}, "t: batch_timeout_micros must be non-negative; was -1"),
        ({"batch_timeout_s": 1}, "t: unknown batching parameter 'batch_timeout_s'"),
        (
            {"max_batch_size": 4, "allowed_batch_sizes": [2]},
            "t: Last entry in allowed_batch_sizes must match max_batch_size; last entry was 2; expected 4",
        ),
    ],
)
def test_from_mapping_rejects_bad_values(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        BatchingOptions.from_mapping(data, source="t")
    assert info.value.message.startswith(message)


def test_direct_construction_validates_too() -> None:
    with pytest.raises(ConfigError, match="num_batch_threads must be positive"):
        BatchingOptions(num_batch_threads=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        BatchingOptions().max_batch_size = 3  # type: ignore[misc]


def test_parsing_does_not_import_tensorflow() -> None:
    code = (
        "import sys\n"
        "from mlsrv.batching_params import parse_batching_parameters as p\n"
        "assert p('max_batch_size { value: 4 }', source='x').max_batch_size == 4\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
