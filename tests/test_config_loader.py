"""Flags, TOML and TF Serving's text-proto model config become one ServerConfig (spec sections 0, 1, 4.1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlsrv import flags
from mlsrv.config import All, Latest, Specific
from mlsrv.config_loader import available_cpus, load_config, parse_model_config_text
from mlsrv.errors import ConfigError


def test_single_model_defaults(tmp_path: Path) -> None:
    config = load_config({"model_base_path": str(tmp_path)})
    assert [(m.name, m.base_path) for m in config.models] == [("default", str(tmp_path))]
    assert config.rest.port == 8501 and config.grpc.port == 8500
    assert config.lifecycle.file_system_poll_wait_s == 1.0
    assert config.lifecycle.max_load_retries == 5
    assert config.lifecycle.load_retry_interval_s == 60.0
    assert config.runtime.saved_model_tags == ("serve",)


def test_relative_base_path_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m").mkdir()
    config = load_config({"model_base_path": "m", "model_name": "x"})
    assert config.models[0].base_path == str(tmp_path / "m")


def test_no_model_is_tf_servings_error() -> None:
    with pytest.raises(ConfigError, match="Both server_options.model_base_path and server_options.model_config_file"):
        load_config({})


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"port": 0}, "At least one of server_options.grpc_port or server_options.grpc_socket_path must be set."),
        ({"batching_parameters_file": "/x"}, "batching_parameters_file is set without setting"),
        (
            {"tensorflow_session_parallelism": 1, "tensorflow_intra_op_parallelism": 1,
             "tensorflow_inter_op_parallelism": 1},
            "You cannot configure all.",
        ),
        ({"use_alts_credentials": True, "ssl_config_file": "/x"}, "Either use_alts_credentials must be false"),
    ],
)
def test_startup_checks(given: dict[str, flags.FlagValue], message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(").replace(")", r"\)")):
        load_config({"model_base_path": str(tmp_path), **given})


def test_model_config_text_proto_policies_and_labels() -> None:
    text = """
    model_config_list {
      config { name: "a" base_path: "/models/a" model_platform: "tensorflow"
               model_version_policy { specific { versions: 42 versions: 43 } }
               version_labels { key: "stable" value: 42 } version_labels { key: "canary" value: 43 } }
      config { name: "b" base_path: "/models/b" model_platform: "tensorflow" model_version_policy { all {} } }
      config { name: "c" base_path: "/models/c" model_platform: "tensorflow"
               model_version_policy { latest { num_versions: 2 } } }
      config { name: "d" base_path: "/models/d" model_platform: "tensorflow" }
    }
    """
    models = parse_model_config_text(text, source="cfg")
    assert [m.version_policy for m in models] == [Specific((42, 43)), All(), Latest(2), Latest(1)]
    assert dict(models[0].version_labels) == {"stable": 42, "canary": 43}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("improperly formatted file", "Error parsing text-format tensorflow.serving.ModelServerConfig"),
        ('model_config_list { config { name: "a" base_path: "/a" } }',
         "Illegal setting neither ModelServerConfig::model_type (deprecated) nor ModelServerConfig::model_platform, "
         "model name is a"),
        ('model_config_list { config { name: "a" base_path: "rel" model_platform: "tensorflow" } }',
         "Expected model a to have an absolute path or URI; got base_path()=rel"),
        ('model_config_list { config { name: "a" base_path: "/a" model_platform: "tensorflow" } '
         'config { name: "a" base_path: "/b" model_platform: "tensorflow" } }',
         "Illegal to list model a multiple times in config list"),
        ('model_config_list { config { name: "a" base_path: "/a" model_platform: "pytorch" } }',
         "Model a requests unsupported platform pytorch"),
    ],
)
def test_model_config_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_model_config_text(text, source="cfg.txt")
    assert message in info.value.message


def test_reference_configs_parse(reference_dir: Path) -> None:
    good = (reference_dir / "good_model_config.txt").read_text().replace("${TEST_HALF_PLUS_TWO_DIR}", "/m/two")
    good = good.replace("${TEST_HALF_PLUS_THREE_DIR}", "/m/three")
    models = parse_model_config_text(good, source="good")
    assert [m.name for m in models] == ["half_plus_two", "half_plus_three"]
    with pytest.raises(ConfigError, match="Error parsing text-format tensorflow.serving.ModelServerConfig"):
        load_config({"model_config_file": str(reference_dir / "bad_model_config.txt")})


def test_toml_config_and_flag_override(tmp_path: Path) -> None:
    (tmp_path / "models" / "m").mkdir(parents=True)
    config_file = tmp_path / "mlsrv.toml"
    config_file.write_text(
        """
[server]
port = 9000
rest_api_port = 9001
enable_batching = true
file_system_poll_wait_seconds = 5

[batching]
max_batch_size = 32

[[models]]
name = "m"
base_path = "models/m"
version_policy = { specific = [1, 2] }
version_labels = { stable = 1 }
"""
    )
    config = load_config({"config": str(config_file), "port": 9100})
    assert config.grpc.port == 9100  # the flag wins over the file
    assert config.rest.port == 9001
    assert config.enable_batching
    assert config.lifecycle.file_system_poll_wait_s == 5
    assert dict(config.batching_toml or {}) == {"max_batch_size": 32}
    (model,) = config.models
    assert model.base_path == str(tmp_path / "models" / "m")
    assert model.version_policy == Specific((1, 2))
    assert dict(model.version_labels) == {"stable": 1}


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[server]\nbogus = 1\n", "server.bogus: unknown setting"),
        ("[server]\nport = 'x'\n", "server.port: expected an integer, got 'x'"),
        ("[[models]]\nname = 'm'\n", "models[0].base_path: required string"),
        ("[[models]]\nname='m'\nbase_path='/x'\nversion_policy='newest'\n", "models[0].version_policy"),
        ("[srv]\n", "unknown table"),
        ("not toml =", "invalid TOML"),
    ],
)
def test_toml_errors(toml: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config({"config": str(path)})


def test_normalize_argv_accepts_tf_bool_syntax() -> None:
    argv = ["--enable_batching", "--port=1", "--rest_api_enable_cors_support", "false", "--model_name", "x",
            "--enable_model_warmup=false"]
    assert flags.normalize_argv(argv) == [
        "--enable_batching=true", "--port=1", "--rest_api_enable_cors_support=false", "--model_name", "x",
        "--enable_model_warmup=false",
    ]


def test_parse_values_and_bad_value() -> None:
    assert flags.parse_given({"port": "8", "enable_batching": "true", "model_name": None}) == {
        "port": 8, "enable_batching": True}
    with pytest.raises(ConfigError, match="Illegal value 'abc' specified for int flag 'port'"):
        flags.parse_given({"port": "abc"})


def test_unimplemented_flags_are_reported(tmp_path: Path) -> None:
    config = load_config({"model_base_path": str(tmp_path), "xla_cpu_compilation_enabled": True,
                          "enable_profiler": True, "rest_api_num_threads": 8, "num_load_threads": 2})
    assert sorted(config.unimplemented_flags) == ["num_load_threads", "rest_api_num_threads",
                                                  "xla_cpu_compilation_enabled"]


def test_channel_arguments(tmp_path: Path) -> None:
    config = load_config({"model_base_path": str(tmp_path),
                          "grpc_channel_arguments": "grpc.max_connection_age_ms=2000,grpc.primary_user_agent=x"})
    assert config.grpc.channel_arguments == (("grpc.max_connection_age_ms", 2000), ("grpc.primary_user_agent", "x"))


def test_workers_from_flags_and_toml(tmp_path: Path) -> None:

    assert load_config({"model_base_path": str(tmp_path)}).workers == 1
    assert load_config({"model_base_path": str(tmp_path), "workers": "3"}).workers == 3
    assert load_config({"model_base_path": str(tmp_path), "workers": "auto"}).workers == available_cpus()
    toml = tmp_path / "mlsrv.toml"
    for value, expected in (("2", 2), ('"auto"', available_cpus())):
        toml.write_text(f'[server]\nmodel_base_path = "{tmp_path}"\nworkers = {value}\n')
        assert load_config({"config": str(toml)}).workers == expected
    for bad in ("0", "1.5", "many"):
        with pytest.raises(ConfigError, match="--workers must be a whole number >= 1 or 'auto'"):
            load_config({"model_base_path": str(tmp_path), "workers": bad})


def test_auto_workers_follow_a_containers_cpu_quota(tmp_path: Path) -> None:
    import os

    cores = len(os.sched_getaffinity(0))
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert available_cpus(tmp_path) == cores
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # limits.cpu: 1.5 -> 2 workers (at most the cores)
    assert available_cpus(tmp_path) == min(cores, 2)
    (tmp_path / "cpu.max").write_text("50000 100000\n")
    assert available_cpus(tmp_path) == 1
    (tmp_path / "cpu.max").unlink()  # cgroup v1
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert available_cpus(tmp_path) == 1


def test_whether_the_rest_port_was_asked_for(tmp_path: Path) -> None:
    assert load_config({"model_base_path": str(tmp_path)}).rest.port_asked is False
    assert load_config({"model_base_path": str(tmp_path), "rest_api_port": 8501}).rest.port_asked is True
    toml = tmp_path / "mlsrv.toml"
    toml.write_text(f'[server]\nmodel_base_path = "{tmp_path}"\nrest_api_port = 9000\n')
    assert load_config({"config": str(toml)}).rest.port_asked is True


def test_the_profiler_is_on_by_default_unless_its_server_would_be_more_open_than_the_grpc_port(
    tmp_path: Path,
) -> None:
    base = {"model_base_path": str(tmp_path)}
    assert load_config(base).grpc.enable_profiler is True  # 0.0.0.0, no TLS: as TF Serving
    assert load_config({**base, "host": "127.0.0.1"}).grpc.enable_profiler is False
    ssl = tmp_path / "ssl.txt"
    ssl.write_text("server_key: \"k\" server_cert: \"c\"")
    assert load_config({**base, "ssl_config_file": str(ssl)}).grpc.enable_profiler is False
    assert load_config({**base, "host": "127.0.0.1", "enable_profiler": True}).grpc.enable_profiler is True
    assert load_config({**base, "enable_profiler": False}).grpc.enable_profiler is False


def _logged(logging_config: str) -> str:
    model = f'name: "m" base_path: "/m" model_platform: "tensorflow" {logging_config}'
    return f"model_config_list {{ config {{ {model} }} }}"


def test_logging_config_is_read() -> None:
    (model,) = parse_model_config_text(_logged(
        'logging_config { log_collector_config { type: "tfrecord" filename_prefix: "/var/log/m" } '
        "sampling_config { sampling_rate: 0.25 attributes: 1 } }"), source="cfg")  # fmt: skip
    assert model.logging is not None
    assert (model.logging.sampling_rate, model.logging.filename_prefix) == (0.25, "/var/log/m")
    (untyped,) = parse_model_config_text(_logged(
        'logging_config { log_collector_config { filename_prefix: "/l" } }'), source="cfg")  # fmt: skip
    assert untyped.logging is not None and untyped.logging.sampling_rate == 0.0  # TF's default: nothing sampled
    (plain,) = parse_model_config_text(_logged(""), source="cfg")
    assert plain.logging is None


@pytest.mark.parametrize(
    ("logging_config", "message"),
    [
        ('logging_config { log_collector_config { type: "sstable" filename_prefix: "/l" } }',
         "logging_config of model m: Cannot find LogCollector::Factory for type: sstable"),
        ("logging_config { sampling_config { sampling_rate: 0.5 } }",
         "logging_config of model m: log_collector_config.filename_prefix is required"),
        ('logging_config { log_collector_config { filename_prefix: "/l" } sampling_config { sampling_rate: 1.5 } }',
         "sampling_rate must be a number from 0 to 1, got 1.5"),
        ('logging_config { log_collector_config { filename_prefix: "/l" } sampling_config { sampling_rate: nan } }',
         "sampling_rate must be a number from 0 to 1, got nan"),
        ('logging_config { log_collector_config { filename_prefix: "/l" } '
         'custom_logging_config { type_url: "type.googleapis.com/x" } }',
         "custom_logging_config is not supported"),
        ('logging_config { log_collector_config { filename_prefix: "/l" } '
         "sampling_config { per_task_sampling_configs { sampling_rate: 1 } } }",
         "per_task_sampling_configs is not supported"),
    ],
)
def test_logging_config_errors(logging_config: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_model_config_text(_logged(logging_config), source="cfg")
    assert message in info.value.message


def test_toml_logging_and_log_flags(tmp_path: Path) -> None:
    path = tmp_path / "mlsrv.toml"
    path.write_text("[[models]]\nname = 'm'\nbase_path = 'models/m'\n"
                    "logging = { sampling_rate = 0.5, filename_prefix = 'logs/m' }\n")  # fmt: skip
    config = load_config({"config": str(path), "access_log": "-", "access_log_format": "JSON",
                          "request_log_file_bytes": 1000})  # fmt: skip
    (model,) = config.models
    assert model.logging is not None and model.logging.filename_prefix == str(tmp_path / "logs" / "m")
    assert model.logging.sampling_rate == 0.5
    assert (config.access_log, config.access_log_format, config.request_log_file_bytes) == ("-", "json", 1000)
    defaults = load_config({"model_base_path": str(tmp_path)})
    assert (defaults.access_log, defaults.request_log_queue_bytes) == ("", 64 << 20)
    path.write_text("[[models]]\nname = 'm'\nbase_path = '/m'\nlogging = { sampling_rate = 'all' }\n")
    with pytest.raises(ConfigError, match="models\\[0\\].logging: log_collector_config.filename_prefix is required"):
        load_config({"config": str(path)})
    path.write_text("[[models]]\nname = 'm'\nbase_path = '/m'\nlogging = { rate = 1 }\n")
    with pytest.raises(ConfigError, match="unknown key\\(s\\) \\['rate'\\]"):
        load_config({"config": str(path)})
    with pytest.raises(ConfigError, match="--access_log_format must be plain or json"):
        load_config({"model_base_path": str(tmp_path), "access_log_format": "xml"})
