"""Batching options: TF Serving's ``BatchingParameters`` text-proto (and the TOML form) as a dataclass.

This is a config-boundary module like ``config.py``: files and TOML tables become :class:`BatchingOptions`
here, and nothing downstream parses anything.

Why protobuf without TensorFlow: ``BatchingParameters`` lives in TF Serving's
``servables/tensorflow/session_bundle_config.proto``, which ``tensorflow-serving-api`` does not ship (and
whose real module would import ``tensorflow.core.protobuf.config_pb2``, i.e. all of TensorFlow). Instead of
a hand-written parser we describe the message (same package, names, numbers and wrapper types as the real
proto) with ``descriptor_pb2`` in a private ``DescriptorPool`` and let ``google.protobuf.text_format`` parse
it. That gives exactly the grammar TF Serving accepts (comments, ``:`` before ``{``, ``[1, 2]`` lists,
``,``/``;`` separators, duplicate-field and unknown-field errors) for ~40 ms and no TensorFlow import.

Validation follows TF Serving's model-server path (``bundle_factory_util.cc`` ``WrapSessionForBatching``,
``GetQueueOptions`` and ``SharedBatchScheduler::AddQueue``):

* ``max_batch_size`` is the largest *task* (``input_batch_size_limit``); ``max_execution_batch_size`` is the
  largest *executed batch*, and only counts when ``enable_large_batch_splitting`` is on (otherwise it is
  ignored, as in ``GetQueueOptions``).
* ``allowed_batch_sizes``: the last entry must equal ``max_batch_size`` (the model server checks against
  ``max_batch_size`` even with splitting). We also require positive, strictly increasing entries (TF's
  ``CreateBasicBatchingSession`` rule); TF's model server skips that check and would pad oddly instead.
* ``max_enqueued_batches: 0`` is rewritten to 1 without splitting (TF's compatibility quirk) and rejected
  with splitting.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from mlsrv.errors import ConfigError

DEFAULT_THREAD_POOL_NAME: Final = "model_server_batch_threads"
"""What TF Serving names the pool when ``--enable_batching`` is given without a parameters file."""

FILE_THREAD_POOL_NAME: Final = "batch_threads"
"""``SharedBatchScheduler::Options`` default, used when a parameters file leaves the name unset."""


def _default_num_threads() -> int:
    """TF's ``port::MaxParallelism()``: the CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchingOptions:
    """One batch queue's settings; field names follow ``BatchingParameters``, defaults TF's schedulers.

    ``num_batch_threads`` bounds the batches of *this* queue running at once (TF shares one pool across
    all models; mlsrv has one queue per model version and signature, all on the Server's executor).
    Construction validates, so an instance is always usable; errors are :class:`ConfigError`.
    """

    max_batch_size: int = 1000
    batch_timeout_s: float = 0.0
    max_enqueued_batches: int = 10
    num_batch_threads: int = field(default_factory=_default_num_threads)
    thread_pool_name: str = DEFAULT_THREAD_POOL_NAME
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False
    enable_large_batch_splitting: bool = False
    max_execution_batch_size: int | None = None

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def execution_batch_size(self) -> int:
        """Rows in the largest batch run (``max_execution_batch_size`` counts only when splitting)."""
        if self.enable_large_batch_splitting and self.max_execution_batch_size is not None:
            return self.max_execution_batch_size
        return self.max_batch_size

    @property
    def queue_capacity_rows(self) -> int:
        """The queue bound in rows: ``max_enqueued_batches`` batches of the execution size."""
        return self.max_enqueued_batches * self.execution_batch_size

    @classmethod
    def from_mapping(cls, data: Mapping[str, object], *, source: str) -> BatchingOptions:
        """Build from a TOML table using the text-proto field names (``batch_timeout_micros`` in µs).

        Values are plain (``max_batch_size = 128``, not ``{ value: 128 }``); unknown keys are errors.
        """
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            kind = _FIELD_KINDS.get(key)
            if kind is None:
                raise ConfigError(f"{source}: unknown batching parameter {key!r} (known: {_KNOWN_KEYS})")
            kwargs.update(_convert(key, kind, value, source))
        return _build(kwargs, source)


_INT: Final = "int"
_BOOL: Final = "bool"
_STR: Final = "str"
_INT_LIST: Final = "int_list"

# BatchingParameters fields: (name, number, kind, wrapped). Wrapped fields are google.protobuf.*Value.
_PROTO_FIELDS: Final[tuple[tuple[str, int, str, bool], ...]] = (
    ("max_batch_size", 1, _INT, True),
    ("batch_timeout_micros", 2, _INT, True),
    ("max_enqueued_batches", 3, _INT, True),
    ("num_batch_threads", 4, _INT, True),
    ("thread_pool_name", 5, _STR, True),
    ("allowed_batch_sizes", 6, _INT_LIST, False),
    ("pad_variable_length_inputs", 7, _BOOL, False),
    ("enable_large_batch_splitting", 8, _BOOL, True),
    ("max_execution_batch_size", 9, _INT, True),
)
_FIELD_KINDS: Final[dict[str, str]] = {name: kind for name, _, kind, _ in _PROTO_FIELDS}
_KNOWN_KEYS: Final = ", ".join(_FIELD_KINDS)


def _convert(key: str, kind: str, value: object, source: str) -> dict[str, Any]:
    """Type-check one TOML value and map it to BatchingOptions keyword(s)."""

    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{source}: {key}: expected {expected}, got {value!r}")

    if kind == _INT:
        if not isinstance(value, int) or isinstance(value, bool):
            raise bad("an integer")
        if key == "batch_timeout_micros":
            if value < 0:
                raise ConfigError(f"{source}: batch_timeout_micros must be non-negative; was {value}")
            return {"batch_timeout_s": value / 1e6}
        return {key: value}
    if kind == _BOOL:
        if not isinstance(value, bool):
            raise bad("true or false")
        return {key: value}
    if kind == _STR:
        if not isinstance(value, str):
            raise bad("a string")
        return {key: value}
    if not isinstance(value, list | tuple) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise bad("a list of integers")
    return {key: tuple(value)}


def _build(kwargs: dict[str, Any], source: str) -> BatchingOptions:
    """Apply TF's ``max_enqueued_batches: 0`` rewrite, construct, and prefix errors with the source."""
    if kwargs.get("max_enqueued_batches") == 0 and not kwargs.get("enable_large_batch_splitting", False):
        kwargs["max_enqueued_batches"] = 1
    try:
        return BatchingOptions(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc.message}") from None


def _validate(o: BatchingOptions) -> None:
    """TF's checks, with TF's messages where TF has one."""
    if o.max_batch_size <= 0:
        raise ConfigError(f"max_batch_size must be positive; was {o.max_batch_size}")
    if o.batch_timeout_s < 0:
        raise ConfigError(f"batch_timeout_micros must be non-negative; was {round(o.batch_timeout_s * 1e6)}")
    if o.max_enqueued_batches <= 0:
        raise ConfigError(f"max_enqueued_batches must be positive; was {o.max_enqueued_batches}")
    if o.num_batch_threads < 1:
        raise ConfigError(f"num_batch_threads must be positive; was {o.num_batch_threads}")
    if o.max_execution_batch_size is not None:
        if o.max_execution_batch_size <= 0:
            raise ConfigError(f"max_execution_batch_size must be positive; was {o.max_execution_batch_size}")
        if o.enable_large_batch_splitting and o.max_execution_batch_size > o.max_batch_size:
            raise ConfigError(
                "When enable_large_batch_splitting is true, input_batch_size_limit must be greater than "
                f"or equal to max_execution_batch_size (max_batch_size is {o.max_batch_size}, "
                f"max_execution_batch_size is {o.max_execution_batch_size})."
            )
    sizes = o.allowed_batch_sizes
    if sizes:
        if any(s <= 0 for s in sizes):
            raise ConfigError(f"allowed_batch_sizes entries must be positive; got {list(sizes)}")
        if any(b <= a for a, b in zip(sizes, sizes[1:], strict=False)):
            raise ConfigError("allowed_batch_sizes entries must be monotonically increasing")
        if sizes[-1] != o.max_batch_size:
            raise ConfigError(
                "Last entry in allowed_batch_sizes must match max_batch_size; "
                f"last entry was {sizes[-1]}; expected {o.max_batch_size}"
            )


def _message_class() -> Any:
    """``tensorflow.serving.BatchingParameters`` built in a private pool (no TensorFlow, no global state)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, wrappers_pb2

    pool = descriptor_pool.DescriptorPool()
    wrappers = descriptor_pb2.FileDescriptorProto()
    wrappers_pb2.DESCRIPTOR.CopyToProto(wrappers)
    pool.Add(wrappers)
    fdp = descriptor_pb2.FieldDescriptorProto
    wrapper_type = {
        _INT: ".google.protobuf.Int64Value",
        _BOOL: ".google.protobuf.BoolValue",
        _STR: ".google.protobuf.StringValue",
    }
    plain_type = {_BOOL: fdp.TYPE_BOOL, _INT_LIST: fdp.TYPE_INT64}
    proto = descriptor_pb2.FileDescriptorProto(
        name="tensorflow_serving/servables/tensorflow/session_bundle_config.proto",
        package="tensorflow.serving",
        syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"],
    )
    message = proto.message_type.add(name="BatchingParameters")
    for name, number, kind, wrapped in _PROTO_FIELDS:
        f = message.field.add(name=name, number=number, json_name=_camel(name))
        if wrapped:
            f.type, f.type_name, f.label = fdp.TYPE_MESSAGE, wrapper_type[kind], fdp.LABEL_OPTIONAL
        else:
            f.type = plain_type[kind]
            f.label = fdp.LABEL_REPEATED if kind == _INT_LIST else fdp.LABEL_OPTIONAL
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters"))


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


_POSITION: Final = re.compile(r"^\d+:\d+ : ")


def parse_batching_parameters(text: str, *, source: str) -> BatchingOptions:
    """Parse a text-format ``BatchingParameters`` (TF Serving's ``--batching_parameters_file``).

    Unset fields take TF's defaults; an unset ``thread_pool_name`` is ``"batch_threads"`` as in TF.
    Raises :class:`ConfigError` naming ``source`` (and line:column for syntax errors).
    """
    from google.protobuf import text_format

    msg = _message_class()()
    try:
        text_format.Parse(text, msg)
    except text_format.ParseError as exc:
        where = f"{source}:{exc.GetLine()}:{exc.GetColumn()}" if exc.GetLine() else source
        reason = _POSITION.sub("", str(exc))
        if 'Expected "{"' in reason:
            reason += " (wrapped fields are written like max_batch_size { value: 128 })"
        raise ConfigError(f"{where}: {reason}") from None
    kwargs: dict[str, Any] = {"thread_pool_name": FILE_THREAD_POOL_NAME}
    for name, _, kind, wrapped in _PROTO_FIELDS:
        if wrapped:
            if not msg.HasField(name):
                continue
            value = getattr(msg, name).value
        else:
            value = getattr(msg, name)
        if kind == _INT_LIST:
            value = tuple(int(v) for v in value)
        elif kind == _INT:
            value = int(value)
        if name == "batch_timeout_micros":
            if value < 0:
                raise ConfigError(f"{source}: batch_timeout_micros must be non-negative; was {value}")
            kwargs["batch_timeout_s"] = value / 1e6
        else:
            kwargs[name] = value
    return _build(kwargs, source)


def load_batching_parameters(path: str | os.PathLike[str]) -> BatchingOptions:
    """Read and parse a ``BatchingParameters`` text file; errors name the file."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"{os.fspath(path)}: cannot read batching parameters: {reason}") from None
    return parse_batching_parameters(text, source=os.fspath(path))
