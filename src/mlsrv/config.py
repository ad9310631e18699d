"""The typed configuration tree. Flags, ``mlsrv.toml`` and TF Serving's text-proto files become these
frozen dataclasses at one boundary (``load_config`` in ``mlsrv.config_loader``); nothing else reads files,
``sys.argv`` or the environment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


@dataclass(frozen=True, slots=True)
class Latest:
    """Serve the ``num_versions`` highest versions (TF Serving's default policy, with 1)."""

    num_versions: int = 1


@dataclass(frozen=True, slots=True)
class All:
    """Serve every version found."""


@dataclass(frozen=True, slots=True)
class Specific:
    """Serve exactly these versions (those that exist)."""

    versions: tuple[int, ...]


VersionPolicy = Latest | All | Specific


def _empty_labels() -> Mapping[str, int]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestLogging:
    """A model's ``logging_config`` (TF Serving's ``LoggingConfig``): which share of its successful
    inference calls is written, with the answer, as ``PredictionLog`` records to TFRecord files
    named from ``filename_prefix`` (``server/request_log.py``)."""

    sampling_rate: float
    filename_prefix: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelConfig:
    """One model: TF Serving's ``ModelConfig`` (name, base_path, platform, policy, labels)."""

    name: str
    base_path: str
    platform: str = "tensorflow"
    version_policy: VersionPolicy = field(default_factory=Latest)
    version_labels: Mapping[str, int] = field(default_factory=_empty_labels)
    #: mlsrv.toml only: this model's BatchingParameters fields (plain values).
    batching: Mapping[str, object] | None = None
    #: request logging (``logging_config``); None: this model's calls are not logged
    logging: RequestLogging | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RestConfig:
    """HTTP/REST frontend. ``port`` 0 disables REST (TF Serving's meaning)."""

    host: str = "0.0.0.0"
    port: int = 8501
    #: whether the port was asked for (flag or mlsrv.toml): a busy default port only warns (REST off)
    port_asked: bool = True
    timeout_s: float = 30.0
    enable_cors: bool = False
    #: Limits TF Serving does not have (docs/differences.md): body size, read timeouts, connections.
    max_body_bytes: int = 1 << 30
    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    idle_timeout_s: float = 75.0
    #: 0: derived from the process's file-descriptor limit when the server starts.
    max_connections: int = 0
    #: ``--ssl_config_file`` whose certificate REST serves TLS with ("": plain text); see ``--rest_tls``
    tls_config_file: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class GrpcConfig:
    """gRPC frontend. ``port`` 0 disables TCP gRPC (then ``socket_path`` must be set)."""

    host: str = "0.0.0.0"
    port: int = 8500
    socket_path: str = ""
    channel_arguments: tuple[tuple[str, int | str], ...] = ()
    max_threads: int = 0
    enable_health: bool = True
    #: tensorflow.ProfilerService forwarded to TF's profiler server (``config_loader._profiler_on``)
    enable_profiler: bool = False
    tensor_content_outputs: bool = False
    ssl_config_file: str = ""
    #: Bytes a request's TensorProtos may fill beyond the values they carry (TF has no such limit).
    max_fill_bytes: int = 256 << 20


@dataclass(frozen=True, slots=True, kw_only=True)
class RuntimeConfig:
    """TensorFlow session settings (the parallelism and device flags)."""

    intra_op: int = 0
    inter_op: int = 0
    gpu_memory_fraction: float = 0.0
    saved_model_tags: tuple[str, ...] = ("serve",)
    enable_warmup: bool = True
    warmup_iterations: int = 0
    method_name_check: bool = False
    #: ``--load_op_packages``: modules imported for the TF ops they register, before models load
    op_packages: tuple[str, ...] = ()
    #: ``--prefer_tflite_model``: a version's ``model.tflite`` is served when present
    prefer_tflite: bool = False
    #: TF Lite interpreters per version (``--num_tflite_pools`` x ``--num_tflite_interpreters_per_pool``)
    tflite_interpreters: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class LifecycleConfig:
    """Version discovery and loading (file-system polling, retries, config-file reload)."""

    file_system_poll_wait_s: float = 1.0
    #: object-store base paths are listed at most this often (``--remote_poll_wait_seconds``)
    remote_poll_wait_s: float = 30.0
    #: where versions of object-store base paths are downloaded ("" = ``remote_storage.default_cache_dir``)
    remote_cache_dir: str = ""
    model_config_poll_wait_s: float = 0.0
    max_load_retries: int = 5
    load_retry_interval_s: float = 60.0
    allow_labels_for_unavailable: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    """Everything ``mlsrv serve`` needs. Built by ``mlsrv.config_loader.load_config``."""

    models: tuple[ModelConfig, ...]
    #: the one model of ``--model_name`` / ``--model_base_path`` (not a config file or ``[[models]]``)
    single_model: bool = False
    model_config_file: str = ""
    rest: RestConfig = field(default_factory=RestConfig)
    grpc: GrpcConfig = field(default_factory=GrpcConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    lifecycle: LifecycleConfig = field(default_factory=LifecycleConfig)
    enable_batching: bool = False
    batching_parameters_file: str = ""
    batching_toml: Mapping[str, object] | None = None
    per_model_batching: bool = False
    monitoring_config_file: str = ""
    #: Admission bounds (``server/admission.py``); 0 means the default.
    max_inflight_requests: int = 0
    max_inflight_bytes: int = 0
    #: on stop: not ready but still serving this long, for load balancers that poll /readyz
    drain_delay_s: float = 0.0
    #: server processes (``--workers``): 1 is this process alone; more are run by ``server.supervisor``
    workers: int = 1
    #: bearer tokens (``server/auth.py``): "" is no authentication
    auth_token_file: str = ""
    admin_token_file: str = ""
    auth_open_metrics: bool = False
    model_management_disabled: bool = False
    #: request logs (``server/request_log.py``): a file is rotated past this size; records wait for
    #: the writer in a queue of at most this many bytes (past it they are dropped and counted)
    request_log_file_bytes: int = 64 << 20
    request_log_queue_bytes: int = 64 << 20
    #: access log (``server/access_log.py``): "" off, "-" standard output, else a file; "plain" or "json"
    access_log: str = ""
    access_log_format: str = "plain"
    #: flags that were given but that this version does not implement (warned about once at start).
    unimplemented_flags: tuple[str, ...] = ()
