"""Builds a :class:`ServerConfig` from flag defaults, ``mlsrv.toml``, TF Serving's text-proto model
config and the command-line flags, in that order (later layers win). The one place that reads config
files; everything past it sees frozen dataclasses. Startup checks and their messages follow
``tensorflow_model_server`` (spec section 0).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from mlsrv import flags
from mlsrv.config import (
    All,
    GrpcConfig,
    Latest,
    LifecycleConfig,
    ModelConfig,
    RequestLogging,
    RestConfig,
    RuntimeConfig,
    ServerConfig,
    Specific,
    VersionPolicy,
)
from mlsrv.errors import ConfigError, first_line

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

log = logging.getLogger(__name__)

_PROTO_TYPE = "tensorflow.serving.ModelServerConfig"


def load_config(given: Mapping[str, flags.FlagValue]) -> ServerConfig:
    """The server configuration for the flags the user typed (``given``: only flags present on the line)."""
    toml_doc: dict[str, Any] = {}
    config_path = str(given.get("config", "") or "")
    if config_path:
        toml_doc = read_toml(config_path)
    values: dict[str, flags.FlagValue] = {f.name: f.default for f in flags.FLAGS}
    #: what the user set, in mlsrv.toml or on the command line (the line wins), as against defaults
    asked = {**_toml_server_flags(toml_doc, config_path), **given}
    values.update(asked)
    _check_startup(values)
    models, single = _models(values, given, toml_doc, config_path)
    return _build(values, models, toml_doc, given, asked, single)


def read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except OSError as error:
        raise ConfigError(f"cannot read config file {path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: invalid TOML: {error}") from None


def _toml_server_flags(doc: Mapping[str, Any], path: str) -> dict[str, flags.FlagValue]:
    unknown = set(doc) - {"server", "batching", "models"}
    if unknown:
        raise ConfigError(f"{path}: unknown table(s) {sorted(unknown)}; expected [server], [batching], [[models]]")
    out: dict[str, flags.FlagValue] = {}
    for key, value in dict(doc.get("server", {})).items():
        flag = flags.BY_NAME.get(key)
        if flag is None or key in ("config", "version"):
            raise ConfigError(f"{path}: server.{key}: unknown setting (use tensorflow_model_server flag names)")
        if key == "workers" and isinstance(value, int) and not isinstance(value, bool):
            value = str(value)  # a count or "auto": TOML's 2 and "auto" both mean what they say
        if not _toml_type_ok(flag.type, value):
            raise ConfigError(f"{path}: server.{key}: expected {_KIND_WORDS[flag.type]}, got {value!r}")
        out[key] = float(value) if flag.type is float else value
    return out


_KIND_WORDS: Final[dict[type, str]] = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _toml_type_ok(kind: type, value: object) -> bool:
    if kind is bool or isinstance(value, bool):
        return kind is bool and isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float))
    return isinstance(value, kind)


def _check_startup(values: Mapping[str, flags.FlagValue]) -> None:
    if values["port"] == 0 and not values["grpc_socket_path"]:
        raise ConfigError("At least one of server_options.grpc_port or server_options.grpc_socket_path must be set.")
    if values["use_alts_credentials"] and values["ssl_config_file"]:
        raise ConfigError("Either use_alts_credentials must be false or ssl_config_file must be empty.")
    if values["batching_parameters_file"] and not values["enable_batching"]:
        raise ConfigError(
            "server_options.batching_parameters_file is set without setting server_options.enable_batching to true."
        )
    parallelism = (
        "tensorflow_session_parallelism",
        "tensorflow_intra_op_parallelism",
        "tensorflow_inter_op_parallelism",
    )
    if all(int(values[name]) > 0 for name in parallelism):
        raise ConfigError(
            "Either configure server_options.tensorflow_session_parallelism or "
            "(server_options.tensorflow_intra_op_parallelism, server_options.tensorflow_inter_op_parallelism) "
            "separately. You cannot configure all."
        )


def _models(
    values: Mapping[str, flags.FlagValue],
    given: Mapping[str, flags.FlagValue],
    toml_doc: Mapping[str, Any],
    config_path: str,
) -> tuple[tuple[ModelConfig, ...], bool]:
    """The models, and whether they are TF's single model of ``--model_name``/``--model_base_path``."""
    config_file = str(values["model_config_file"])
    base_path = str(values["model_base_path"])
    flags_name_models = "model_config_file" in given or "model_base_path" in given
    if config_file:
        return parse_model_config_file(config_file), False
    if base_path and (flags_name_models or "models" not in toml_doc):
        absolute = base_path if "://" in base_path else os.path.abspath(base_path)
        return (ModelConfig(name=str(values["model_name"]), base_path=absolute),), True
    if "models" in toml_doc:
        return _toml_models(toml_doc["models"], config_path), False
    raise ConfigError("Both server_options.model_base_path and server_options.model_config_file are empty!")


def parse_model_config_file(path: str, *, validate: bool = True) -> tuple[ModelConfig, ...]:
    """Read a text-format ``ModelServerConfig`` file (TF-free protos) into validated model configs.

    ``validate=False`` leaves the list checks to a reload, which runs them in TF's order among its
    own (see :meth:`Server.reload_models`) and reports them as ``ReloadConfig`` failures.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"Failed to read ModelServerConfig file {path}: {error}") from None
    return parse_model_config_text(text, source=path, validate=validate)


def parse_model_config_text(text: str, *, source: str, validate: bool = True) -> tuple[ModelConfig, ...]:
    """Parse and validate ModelServerConfig text, with TF Serving's messages."""
    return models_from_proto(parse_model_server_config(text, source=source), validate=validate)


def parse_model_server_config(text: str, *, source: str) -> Any:
    """The ``ModelServerConfig`` message of ``text``; ConfigError with TF's words if it does not parse."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    message = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, message)
    except (text_format.ParseError, RecursionError) as error:
        raise ConfigError(f"{source}: Error parsing text-format {_PROTO_TYPE}: {first_line(error)}") from None
    if message.WhichOneof("config") == "custom_model_config":
        raise ConfigError(f"{source}: ModelServer does not yet support custom model config.")
    return message


def parse_model_server_config_bytes(data: bytes) -> Any:
    """A serialized ``ModelServerConfig`` (one a reload RPC carried, saved for ``--workers`` siblings)."""
    from google.protobuf.message import DecodeError
    from tensorflow_serving.config import model_server_config_pb2

    try:
        return model_server_config_pb2.ModelServerConfig.FromString(data)
    except DecodeError as error:
        raise ConfigError(f"a saved model config does not parse: {error}") from None


def models_from_proto(message: Any, *, validate: bool = True) -> tuple[ModelConfig, ...]:
    """Validated model configs from a ``ModelServerConfig`` message (file or HandleReloadConfigRequest)."""
    models = tuple(_model_from_proto(proto) for proto in message.model_config_list.config)
    if validate:
        validate_models(models)
    return models


def _model_from_proto(proto: Any) -> ModelConfig:
    if proto.model_type and proto.model_platform:
        raise ConfigError(
            f"Illegal setting both ModelServerConfig::model_type (deprecated) and "
            f"ModelServerConfig::model_platform, model name is {proto.name}"
        )
    platform = proto.model_platform or ("tensorflow" if proto.model_type == 1 else "")
    if not platform:
        raise ConfigError(
            "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
            f"ModelServerConfig::model_platform, model name is {proto.name}"
        )
    policy_kind = proto.model_version_policy.WhichOneof("policy_choice")
    policy: VersionPolicy
    if policy_kind == "all":
        policy = All()
    elif policy_kind == "specific":
        policy = Specific(tuple(int(v) for v in proto.model_version_policy.specific.versions))
    else:
        policy = Latest(max(1, int(proto.model_version_policy.latest.num_versions)))
    return ModelConfig(
        name=proto.name,
        base_path=proto.base_path,
        platform=platform,
        version_policy=policy,
        version_labels=MappingProxyType({str(k): int(v) for k, v in proto.version_labels.items()}),
        logging=_logging_from_proto(proto.name, proto.logging_config) if proto.HasField("logging_config") else None,
    )


#: The one log collector mlsrv has (``LogCollectorConfig.type``); "" means it too.
LOG_COLLECTOR_TYPE: Final = "tfrecord"


def _logging_from_proto(model: str, proto: Any) -> RequestLogging:
    """A model's ``LoggingConfig``. Stock TF Serving has no log collector and refuses any (``No
    request-logger-creator provided.``); mlsrv has one, ``tfrecord`` (docs/security.md)."""
    if proto.HasField("custom_logging_config"):
        raise ConfigError(f"logging_config of model {model}: custom_logging_config is not supported")
    sampling = proto.sampling_config
    if len(sampling.per_task_sampling_configs):
        raise ConfigError(f"logging_config of model {model}: per_task_sampling_configs is not supported")
    return _request_logging(
        f"logging_config of model {model}",
        proto.log_collector_config.type,
        proto.log_collector_config.filename_prefix,
        sampling.sampling_rate,
    )


def _request_logging(where: str, kind: object, prefix: object, rate: object) -> RequestLogging:
    if kind not in ("", LOG_COLLECTOR_TYPE):
        raise ConfigError(
            f"{where}: Cannot find LogCollector::Factory for type: {kind} (mlsrv writes type {LOG_COLLECTOR_TYPE!r})"
        )
    if not isinstance(prefix, str) or not prefix:
        raise ConfigError(f"{where}: log_collector_config.filename_prefix is required (where the files go)")
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate <= 1.0:
        raise ConfigError(f"{where}: sampling_rate must be a number from 0 to 1, got {rate!r}")
    return RequestLogging(sampling_rate=float(rate), filename_prefix=prefix)


def validate_models(models: tuple[ModelConfig, ...], *, check_platforms: bool = True) -> None:
    """TF Serving's ModelConfigList checks, each over the whole list in TF's order: unique names,
    absolute paths (``ValidateModelConfigList``), then known platforms (when creating routes)."""
    seen: set[str] = set()
    for model in models:
        if model.name in seen:
            raise ConfigError(f"Illegal to list model {model.name} multiple times in config list")
        seen.add(model.name)
    for model in models:
        if not (os.path.isabs(model.base_path) or "://" in model.base_path):
            raise ConfigError(
                f"Expected model {model.name} to have an absolute path or URI; got base_path()={model.base_path}"
            )
    if check_platforms:
        check_platforms_supported(models)


def check_platforms_supported(models: tuple[ModelConfig, ...]) -> None:
    for model in models:
        if model.platform != "tensorflow":
            raise ConfigError(f"Model {model.name} requests unsupported platform {model.platform}")


def check_no_platform_changes(previous: tuple[ModelConfig, ...], models: tuple[ModelConfig, ...]) -> None:
    """TF's ``ValidateNoModelsChangePlatforms`` across a reload."""
    before = {model.name: model.platform for model in previous}
    for model in models:
        old = before.get(model.name)
        if old is not None and old != model.platform:
            raise ConfigError(
                f"Illegal to change a model's platform. For model {model.name} platform was {old} and new "
                f"platform requested is {model.platform}"
            )


def _toml_models(entries: Any, path: str) -> tuple[ModelConfig, ...]:
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: models must be an array of tables ([[models]])")
    root = os.path.dirname(os.path.abspath(path))
    models = []
    for index, entry in enumerate(entries):
        where = f"{path}: models[{index}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ConfigError(f"{where}.name: required string")
        unknown = set(entry) - {"name", "base_path", "platform", "version_policy", "version_labels", "batching",
                                "logging"}
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}")
        base = entry.get("base_path")
        if not isinstance(base, str):
            raise ConfigError(f"{where}.base_path: required string")
        labels = entry.get("version_labels", {})
        if not isinstance(labels, dict) or not all(isinstance(v, int) for v in labels.values()):
            raise ConfigError(f"{where}.version_labels: expected a table of label = version")
        models.append(
            ModelConfig(
                name=entry["name"],
                base_path=base if "://" in base else os.path.join(root, base),
                platform=str(entry.get("platform", "tensorflow")),
                version_policy=_toml_policy(entry.get("version_policy", "latest"), where),
                version_labels=MappingProxyType(dict(labels)),
                batching=_toml_batching(entry.get("batching"), where),
                logging=_toml_logging(entry.get("logging"), where, root),
            )
        )
    result = tuple(models)
    validate_models(result)
    return result


def _toml_batching(value: Any, where: str) -> Mapping[str, object] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ConfigError(f"{where}.batching: expected a table of BatchingParameters fields")
    from mlsrv.batching_params import BatchingOptions

    BatchingOptions.from_mapping(value, source=f"{where}.batching")  # validate now, at startup
    return MappingProxyType(dict(value))


def _toml_logging(value: Any, where: str, root: str) -> RequestLogging | None:
    """``logging = { sampling_rate = 0.1, filename_prefix = "logs/m" }``: a relative prefix is
    relative to the file, like ``base_path``."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ConfigError(f"{where}.logging: expected a table with sampling_rate and filename_prefix")
    unknown = set(value) - {"sampling_rate", "filename_prefix", "type"}
    if unknown:
        raise ConfigError(f"{where}.logging: unknown key(s) {sorted(unknown)}")
    prefix = value.get("filename_prefix")
    if isinstance(prefix, str) and prefix:
        prefix = os.path.join(root, prefix)
    return _request_logging(f"{where}.logging", value.get("type", ""), prefix, value.get("sampling_rate", 1.0))


def _toml_policy(value: Any, where: str) -> VersionPolicy:
    if value == "latest":
        return Latest()
    if value == "all":
        return All()
    if isinstance(value, dict) and len(value) == 1:
        ((kind, arg),) = value.items()
        if kind == "latest" and isinstance(arg, int) and arg >= 0:
            return Latest(max(1, arg))
        if kind == "specific" and isinstance(arg, list) and all(isinstance(v, int) for v in arg):
            return Specific(tuple(arg))
    raise ConfigError(f'{where}.version_policy: expected "latest", "all", {{latest = N}} or {{specific = [versions]}}')


def _channel_arguments(text: str) -> tuple[tuple[str, int | str], ...]:
    """``a=1,b=x`` -> ((a, 1), (b, "x")): values that parse as int32 are ints, as in TF Serving."""
    out: list[tuple[str, int | str]] = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--grpc_channel_arguments: expected key=value, got '{item}'")
        try:
            number = int(value)
            out.append((key, number) if -(2**31) <= number < 2**31 else (key, value))
        except ValueError:
            out.append((key, value))
    return tuple(out)


def _at_least(low: int, values: Mapping[str, flags.FlagValue], name: str) -> int:
    value = int(values[name])
    if value < low:
        raise ConfigError(f"--{name} must be at least {low}, got {value}")
    return value


def _at_least_seconds(low: float, values: Mapping[str, flags.FlagValue], name: str) -> float:
    value = float(values[name])
    if not low <= value < float("inf"):
        raise ConfigError(f"--{name} must be a number of seconds >= {low:g}, got {values[name]}")
    return value


def available_cpus(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """Cores this process may use: its CPU affinity, capped by a cgroup CPU quota (a container's
    ``resources.limits.cpu``, which affinity does not show), rounded up; at least 1."""
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    for quota_file, period_file in (("cpu.max", None), ("cpu/cpu.cfs_quota_us", "cpu/cpu.cfs_period_us")):
        try:
            fields = (cgroup / quota_file).read_text().split()
            quota, period = fields[0], (fields[1] if period_file is None else (cgroup / period_file).read_text())
            if quota not in ("max", "-1"):
                count = min(count, -(-int(quota) // int(period)))
            break
        except (OSError, ValueError, IndexError):
            continue
    return max(1, count)


_LOOPBACK_HOSTS: Final = frozenset({"127.0.0.1", "localhost", "::1"})


def _rest_tls(values: Mapping[str, flags.FlagValue]) -> str:
    """The SSL config REST serves TLS with, or "" for plain text (``--rest_tls``).

    ``auto``: TF Serving's REST is plain text, and stays so, unless the SSL config requires client
    certificates: then plain REST would be an open door beside a gRPC port that checks them, so REST
    requires them too. ``on``: REST serves the certificate (and checks clients when the config says so).
    ``off``: plain text whatever the config says (logged at start when gRPC checks clients).
    """
    mode = str(values["rest_tls"]).strip().lower()
    if mode not in ("auto", "on", "off"):
        raise ConfigError(f"--rest_tls must be auto, on or off, got {values['rest_tls']!r}")
    path = str(values["ssl_config_file"])
    if not path or mode == "off":
        return ""
    from mlsrv import textproto
    from mlsrv.ssl_config import parse_ssl_config

    config = parse_ssl_config(textproto.read(path, "SSL config"), source=path)
    return path if mode == "on" or config.client_verify else ""


def _profiler_on(values: Mapping[str, flags.FlagValue], asked: Mapping[str, flags.FlagValue]) -> bool:
    """``--enable_profiler``: as asked; by default on, as in TF Serving, except where TF's profiler
    server (all interfaces, its own port, no TLS) would be more open than the gRPC port itself: a
    gRPC port with TLS (``--ssl_config_file``) or bound to loopback."""
    if "enable_profiler" in asked:
        return bool(values["enable_profiler"])
    return bool(values["enable_profiler"]) and not values["ssl_config_file"] and values["host"] not in _LOOPBACK_HOSTS


def _access_log_format(values: Mapping[str, flags.FlagValue]) -> str:
    fmt = str(values["access_log_format"]).strip().lower()
    if fmt not in ("plain", "json"):
        raise ConfigError(f"--access_log_format must be plain or json, got {values['access_log_format']!r}")
    return fmt


def _workers(text: str) -> int:
    """``--workers``: a whole number >= 1, or ``auto`` (one per core this process may use)."""
    if text.strip().lower() == "auto":
        return available_cpus()
    try:
        count = int(text)
    except ValueError:
        raise ConfigError(f"--workers must be a whole number >= 1 or 'auto', got {text!r}") from None
    if count < 1:
        raise ConfigError(f"--workers must be a whole number >= 1 or 'auto', got {text!r}")
    return count


def _positive_seconds(values: Mapping[str, flags.FlagValue], name: str) -> float:
    value = float(values[name])
    if not value > 0 or value == float("inf"):
        raise ConfigError(f"--{name} must be a positive number of seconds, got {values[name]}")
    return value


def _build(
    values: Mapping[str, flags.FlagValue],
    models: tuple[ModelConfig, ...],
    toml_doc: Mapping[str, Any],
    given: Mapping[str, flags.FlagValue],
    asked: Mapping[str, flags.FlagValue],
    single_model: bool,
) -> ServerConfig:
    host = str(values["host"])
    rest_port = int(values["rest_api_port"])
    if rest_port and rest_port == int(values["port"]):
        log.error("--rest_api_port cannot be the same as --port; REST API is not started")
        rest_port = 0
    session = int(values["tensorflow_session_parallelism"])
    intra = int(values["tensorflow_intra_op_parallelism"]) or session
    inter = int(values["tensorflow_inter_op_parallelism"]) or session
    tags = tuple(t.strip() for t in str(values["saved_model_tags"]).split(",") if t.strip())
    batching_toml = toml_doc.get("batching")
    if batching_toml is not None and not isinstance(batching_toml, dict):
        raise ConfigError("[batching] must be a table")
    if values["admin_token_file"] and not values["auth_token_file"]:
        raise ConfigError("--admin_token_file needs --auth_token_file (the tokens for everything else)")
    return ServerConfig(
        auth_token_file=str(values["auth_token_file"]),
        admin_token_file=str(values["admin_token_file"]),
        auth_open_metrics=bool(values["auth_open_metrics"]),
        model_management_disabled=bool(values["disable_model_management_api"]),
        models=models,
        single_model=single_model,
        model_config_file=str(values["model_config_file"]),
        rest=RestConfig(
            host=host,
            port=rest_port,
            port_asked="rest_api_port" in asked,
            timeout_s=max(0, int(values["rest_api_timeout_in_ms"])) / 1000.0,
            enable_cors=bool(values["rest_api_enable_cors_support"]),
            max_body_bytes=_at_least(1, values, "rest_max_body_bytes"),
            header_timeout_s=_positive_seconds(values, "rest_header_timeout_seconds"),
            body_timeout_s=_positive_seconds(values, "rest_body_timeout_seconds"),
            idle_timeout_s=_positive_seconds(values, "rest_idle_timeout_seconds"),
            max_connections=_at_least(0, values, "rest_max_connections"),
            tls_config_file=_rest_tls(values),
        ),
        grpc=GrpcConfig(
            host=host,
            port=int(values["port"]),
            socket_path=str(values["grpc_socket_path"]),
            channel_arguments=_channel_arguments(str(values["grpc_channel_arguments"])),
            max_threads=int(values["grpc_max_threads"]),
            enable_health=bool(values["enable_grpc_healthcheck_service"]),
            enable_profiler=_profiler_on(values, asked),
            tensor_content_outputs=bool(values["enable_serialization_as_tensor_content"]),
            ssl_config_file=str(values["ssl_config_file"]),
            max_fill_bytes=_at_least(0, values, "max_tensor_fill_bytes"),
        ),
        runtime=RuntimeConfig(
            intra_op=intra,
            inter_op=inter,
            gpu_memory_fraction=float(values["per_process_gpu_memory_fraction"]),
            saved_model_tags=tags or ("serve",),
            enable_warmup=bool(values["enable_model_warmup"]),
            warmup_iterations=int(values["num_request_iterations_for_warmup"]),
            method_name_check=bool(values["enable_signature_method_name_check"]),
            op_packages=tuple(name.strip() for name in str(values["load_op_packages"]).split(",") if name.strip()),
            prefer_tflite=bool(values["prefer_tflite_model"]),
            tflite_interpreters=max(1, int(values["num_tflite_pools"]) or available_cpus())
            * max(1, int(values["num_tflite_interpreters_per_pool"])),
        ),
        lifecycle=LifecycleConfig(
            file_system_poll_wait_s=float(values["file_system_poll_wait_seconds"]),
            remote_poll_wait_s=max(0.0, float(values["remote_poll_wait_seconds"])),
            remote_cache_dir=str(values["remote_cache_dir"]),
            model_config_poll_wait_s=float(values["model_config_file_poll_wait_seconds"]),
            max_load_retries=max(0, int(values["max_num_load_retries"])),
            load_retry_interval_s=max(0, int(values["load_retry_interval_micros"])) / 1e6,
            allow_labels_for_unavailable=bool(values["allow_version_labels_for_unavailable_models"]),
        ),
        enable_batching=bool(values["enable_batching"]) or ("enable_batching" not in given and bool(batching_toml)),
        batching_parameters_file=str(values["batching_parameters_file"]),
        batching_toml=MappingProxyType(dict(batching_toml)) if batching_toml else None,
        per_model_batching=bool(values["enable_per_model_batching_parameters"]),
        monitoring_config_file=str(values["monitoring_config_file"]),
        max_inflight_requests=_at_least(0, values, "max_inflight_requests"),
        max_inflight_bytes=_at_least(0, values, "max_inflight_bytes"),
        drain_delay_s=_at_least_seconds(0.0, values, "drain_delay_seconds"),
        workers=_workers(str(values["workers"])),
        request_log_file_bytes=_at_least(1, values, "request_log_file_bytes"),
        request_log_queue_bytes=_at_least(0, values, "request_log_queue_bytes"),
        access_log=str(values["access_log"]),
        access_log_format=_access_log_format(values),
        unimplemented_flags=flags.unimplemented(asked),
    )
