"""``tensorflow_model_server``'s flags as data: one table drives ``mlsrv serve``'s parser, its help,
completions and man page, the TOML ``[server]`` keys, and the startup warning for flags mlsrv accepts
but does not implement. Names, types and defaults follow TF Serving's ``main.cc`` (spec section 1);
the one deliberate difference is ``rest_api_port`` defaulting to 8501.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from mlsrv.errors import ConfigError

FlagValue = int | float | str | bool


@dataclass(frozen=True, slots=True)
class Flag:
    name: str
    type: type
    default: FlagValue
    help: str
    implemented: bool = True
    #: mlsrv-only flags are marked so docs can say so.
    extra: bool = False


def _f(name: str, kind: type, default: FlagValue, help: str, *, implemented: bool = True) -> Flag:
    return Flag(name, kind, default, help, implemented)


def _x(name: str, kind: type, default: FlagValue, help: str) -> Flag:
    return Flag(name, kind, default, help, True, True)


FLAGS: Final[tuple[Flag, ...]] = (
    # 1.1 ports / sockets / HTTP
    _f("port", int, 8500, "gRPC TCP port; 0 disables TCP gRPC (then --grpc_socket_path is required)."),
    _f("grpc_socket_path", str, "", "Also serve gRPC on this UNIX socket."),
    _f("rest_api_port", int, 8501, "HTTP/REST port; 0 disables REST. (TF Serving's binary defaults to 0.)"),
    _f("rest_api_num_threads", int, 0, "REST runs on one asyncio loop.", implemented=False),
    _f("rest_api_timeout_in_ms", int, 30000, "Timeout for REST calls; expiry answers 504."),
    _f("rest_api_enable_cors_support", bool, False, "Add CORS headers to every REST response."),
    # 1.2 gRPC
    _f("grpc_channel_arguments", str, "", "Comma-separated key=value gRPC server arguments (ints as ints)."),
    _f("grpc_max_threads", int, 0, "Most gRPC calls handled at once; more wait their turn (0: no limit)."),
    _f("enable_grpc_healthcheck_service", bool, True, "Serve grpc.health.v1.Health (mlsrv: on by default)."),
    _f("enable_profiler", bool, True,
       "tensorflow.ProfilerService on the gRPC port (default: not with TLS or a loopback host, see docs)."),
    _f("enable_serialization_as_tensor_content", bool, False, "Write Predict outputs as tensor_content."),
    # 1.3 model config
    _f("model_name", str, "default", "Model name in single-model mode."),
    _f("model_base_path", str, "", "Model base path (without the version folder) in single-model mode."),
    _f("model_config_file", str, "", "Text-format ModelServerConfig; overrides --model_name/--model_base_path."),
    _f("model_config_file_poll_wait_seconds", float, 0, "Re-read --model_config_file every N seconds (0: once)."),
    _f("allow_version_labels_for_unavailable_models", bool, False, "Allow new labels on versions not yet AVAILABLE."),
    _f("platform_config_file", str, "", "Text-format PlatformConfigMap.", implemented=False),
    _f("saved_model_tags", str, "serve", "Comma-separated MetaGraph tags to load."),
    # 1.4 file-system polling / loading
    _f("file_system_poll_wait_seconds", float, 1, "Poll period for new versions; 0 polls once (fractions allowed)."),
    _f("num_load_threads", int, 0, "Loads run on the server's executor.", implemented=False),
    _f("num_unload_threads", int, 0, "Unloads run on the server's executor.", implemented=False),
    _f("max_num_load_retries", int, 5, "Retries after a failed load; 0 means one attempt."),
    _f("load_retry_interval_micros", int, 60_000_000, "Delay between load retries."),
    _f("flush_filesystem_caches", bool, True, "No effect in mlsrv.", implemented=False),
    # 1.5 batching
    _f("enable_batching", bool, False, "Batch concurrent requests into one model call."),
    _f("batching_parameters_file", str, "", "Text-format BatchingParameters."),
    _f("enable_per_model_batching_parameters", bool, False, "Read batching_params.pbtxt from each SavedModel."),
    # 1.6 parallelism / session / device
    _f("tensorflow_session_parallelism", int, 0, "Sets both intra- and inter-op threads (0: auto)."),
    _f("tensorflow_intra_op_parallelism", int, 0, "Intra-op threads (0: auto)."),
    _f("tensorflow_inter_op_parallelism", int, 0, "Inter-op threads (0: auto)."),
    _f("tensorflow_session_config_file", str, "", "Text-format TF ConfigProto.", implemented=False),
    _f("per_process_gpu_memory_fraction", float, 0.0, "GPU memory fraction (0: TensorFlow decides)."),
    _f("thread_pool_factory_config_file", str, "", "ThreadPoolFactoryConfig.", implemented=False),
    _f("mixed_precision", str, "", "Automatic mixed precision, e.g. bfloat16.", implemented=False),
    _f("xla_cpu_compilation_enabled", bool, False, "XLA:CPU JIT.", implemented=False),
    _f("xla_gpu_compilation_enabled", bool, False, "XLA GPU JIT.", implemented=False),
    _f("skip_initialize_tpu", bool, False, "TPU builds only.", implemented=False),
    _f("remove_unused_fields_from_bundle_metagraph", bool, True, "No effect in mlsrv.", implemented=False),
    _f("enable_signature_method_name_check", bool, False, "Enforce SignatureDef method_name."),
    # 1.7 warmup
    _f("enable_model_warmup", bool, True, "Replay assets.extra/tf_serving_warmup_requests at load."),
    _f("num_request_iterations_for_warmup", int, 0, "Replay each warmup record N times."),
    # 1.8 monitoring / SSL / misc
    _f("monitoring_config_file", str, "", "Text-format MonitoringConfig (Prometheus); served on the REST port."),
    _f("ssl_config_file", str, "", "Text-format SSLConfig for gRPC."),
    _f("use_alts_credentials", bool, False, "Google ALTS credentials for gRPC.", implemented=False),
    _f("version", bool, False, "Print the versions and exit."),
    # 1.9 TFLite
    _f("prefer_tflite_model", bool, False, "Serve a version's model.tflite when it has one (TF Lite, via LiteRT)."),
    _f("num_tflite_pools", int, 0, "TF Lite interpreter pools per version (0: one per CPU)."),
    _f("num_tflite_interpreters_per_pool", int, 1, "TF Lite interpreters per pool."),
    # mlsrv extras
    _x("config", str, "", "mlsrv.toml with server, batching and models tables; flags override it."),
    _x("host", str, "0.0.0.0", "Address to bind REST and TCP gRPC to (mlsrv extra)."),
    _x("rest_tls", str, "auto", "REST over TLS with --ssl_config_file's certificate: auto (when it requires client "
       "certificates, REST does too), on, off (REST stays plain text)."),
    _x("auth_token_file", str, "", "Bearer tokens, one per line, that every REST and gRPC call must carry "
       "(probes stay open); re-read when the file changes."),
    _x("admin_token_file", str, "", "Bearer tokens for model management (HandleReloadConfigRequest) alone."),
    _x("auth_open_metrics", bool, False, "With --auth_token_file: serve the Prometheus page without a token."),
    _x("disable_model_management_api", bool, False, "Refuse HandleReloadConfigRequest (PERMISSION_DENIED)."),
    _x("rest_max_body_bytes", int, 1 << 30, "Largest REST request body; larger ones get 413 before they are read."),
    _x("rest_header_timeout_seconds", float, 10.0, "Time a REST client has to send a request's headers."),
    _x("rest_body_timeout_seconds", float, 60.0, "Time a REST client has to send a request's body."),
    _x("rest_idle_timeout_seconds", float, 75.0, "Idle keep-alive REST connections are closed after this."),
    _x("rest_max_connections", int, 0, "Most open REST connections; more are refused with 503 (0: from the fd limit)."),
    _x("max_tensor_fill_bytes", int, 256 << 20, "Most bytes a gRPC request's tensors may fill beyond the values sent."),
    _x("max_inflight_requests", int, 0,
       "Most inference requests in the server at once; more get 503 / UNAVAILABLE before they are read (0: 1024)."),
    _x("max_inflight_bytes", int, 0,
       "Most inference request bytes in the server at once; past it, 503 / UNAVAILABLE (0: 1/8 of memory, <= 4 GiB)."),
    _x("remote_cache_dir", str, "",
       "Local cache for versions of s3://, gs://, az:// base paths (default $MLSRV_MODEL_CACHE or ~/.cache/mlsrv)."),
    _x("remote_poll_wait_seconds", float, 30.0,
       "Object-store base paths are listed at most this often (listings are billed); local ones every poll."),
    _x("drain_delay_seconds", float, 0.0,
       "On SIGTERM, /readyz turns 503 at once and requests are still served this long before the drain."),
    _x("load_op_packages", str, "",
       "Python packages to import for their TF ops before models load, comma-separated (e.g. tensorflow_text)."),
    _x("request_log_file_bytes", int, 64 << 20,
       "Request logs (a model's logging_config) move to a new file past this size."),
    _x("request_log_queue_bytes", int, 64 << 20,
       "Most bytes of sampled calls waiting for the request-log writer; past it they are dropped and counted."),
    _x("access_log", str, "", "One line per REST request and gRPC call: '-' for standard output, or a file."),
    _x("access_log_format", str, "plain", "Access log lines as plain key=value text or json."),
    _x("workers", str, "1",
       "Server processes sharing the REST and gRPC ports, each with its own models; 'auto': one per core."),
)

BY_NAME: Final[dict[str, Flag]] = {flag.name: flag for flag in FLAGS}

_TRUE: Final = frozenset({"true", "1", "yes", "on"})
_FALSE: Final = frozenset({"false", "0", "no", "off"})


#: TF Serving's int64 flags; every other int flag is an int32.
_INT64_FLAGS: Final = frozenset(
    {
        "load_retry_interval_micros",
        "tensorflow_session_parallelism",
        "tensorflow_intra_op_parallelism",
        "tensorflow_inter_op_parallelism",
    }
)


def parse_value(flag: Flag, text: str) -> FlagValue:
    """Convert a flag's text to its type, with TF's complaint style for bad values."""
    try:
        if flag.type is bool:
            lowered = text.strip().lower()
            if lowered in _TRUE:
                return True
            if lowered in _FALSE:
                return False
            raise ValueError(text)
        if flag.type is int:
            value = int(text, 10)
            low, high = (-(2**63), 2**63 - 1) if flag.name in _INT64_FLAGS else (-(2**31), 2**31 - 1)
            if not low <= value <= high:  # TF's parser rejects what does not fit the flag's C++ type
                raise ValueError(text)
            return value
        if flag.type is float:
            return float(text)
    except ValueError:
        kind = {bool: "bool", int: "int", float: "float"}[flag.type]
        raise ConfigError(f"Illegal value '{text}' specified for {kind} flag '{flag.name}'") from None
    return text


def normalize_argv(argv: Sequence[str]) -> list[str]:
    """Rewrite TF Serving's bare boolean ``--name`` (and ``--name true``) to ``--name=true``.

    Click needs a value for every non-flag option; TF's flag library lets booleans stand alone.
    Everything else passes through untouched, so unknown flags still reach the parser and fail there.
    """
    out: list[str] = []
    items = list(argv)
    index = 0
    while index < len(items):
        arg = items[index]
        index += 1
        flag = BY_NAME.get(arg[2:].replace("-", "_")) if arg.startswith("--") and "=" not in arg else None
        if flag is not None and flag.type is bool:
            following = items[index].lower() if index < len(items) else ""
            if following in _TRUE | _FALSE:
                out.append(f"{arg}={items[index]}")
                index += 1
            else:
                out.append(f"{arg}=true")
            continue
        out.append(arg)
    return out


def parse_given(values: dict[str, str | None]) -> dict[str, FlagValue]:
    """Typed values of the flags that were given (``None`` means not given)."""
    return {name: parse_value(BY_NAME[name], text) for name, text in values.items() if text is not None}


def unimplemented(given: Mapping[str, FlagValue]) -> tuple[str, ...]:
    """Flags the user set (to a non-default value) that mlsrv accepts but does not implement."""
    return tuple(
        name for name, value in given.items() if not BY_NAME[name].implemented and value != BY_NAME[name].default
    )
