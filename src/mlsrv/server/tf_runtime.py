"""The TensorFlow runtime: SavedModel inspection, loading and execution. The only module importing TensorFlow.

Everything TF-specific stays behind three seams: :func:`inspect_saved_model` (reads ``saved_model.pb``
without running anything, for ``mlsrv show`` and for signature metadata), :class:`SavedModelLoader`
(the :class:`~mlsrv.server.servable.Loader` the manager drives) and :class:`TfServable` (the
:class:`~mlsrv.server.servable.Servable` the DataPlane calls). TF errors are translated into
:mod:`mlsrv.errors` here, once, by their canonical code, so no caller ever sees a ``tf.errors`` class.
"""

from __future__ import annotations

import ctypes
import functools
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import tensorflow as tf
from google.protobuf import message, text_format
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from mlsrv.errors import TRUNCATED_SUFFIX, Code, InternalError, MlsrvError, UsageError, error_for_code
from mlsrv.protocol import dtypes, tensor_codec
from mlsrv.protocol.types import SignatureInfo, TensorInfo

log = logging.getLogger(__name__)

SAVED_MODEL_PB: Final = "saved_model.pb"
SAVED_MODEL_PBTXT: Final = "saved_model.pbtxt"
DEFAULT_TAGS: Final = ("serve",)


# --------------------------------------------------------------------------------------------- configure


def configure(intra_op: int, inter_op: int, gpu_memory_fraction: float = 0.0) -> None:
    """Set TF's thread pools and GPU memory policy; call before the first model loads.

    Idempotent: repeating the settings already in force is a no-op. TF fixes these when its runtime
    starts, so a *different* value after that is logged and ignored rather than failing a running server.
    GPUs, when visible, get memory growth (``gpu_memory_fraction == 0``) or a hard limit of that fraction
    of each GPU's memory, like TF Serving's ``--per_process_gpu_memory_fraction``.
    """
    threading = tf.config.threading
    try:
        threading.set_intra_op_parallelism_threads(intra_op)
        threading.set_inter_op_parallelism_threads(inter_op)
    except RuntimeError as error:
        log.warning("TensorFlow thread settings unchanged (%s): runtime already started", error)
    if not 0.0 <= gpu_memory_fraction <= 1.0:
        raise UsageError(f"gpu_memory_fraction must be within [0, 1], got {gpu_memory_fraction}")
    for index, gpu in enumerate(tf.config.list_physical_devices("GPU")):
        try:
            _configure_gpu(index, gpu, gpu_memory_fraction)
        except RuntimeError as error:  # already initialized: keep what is in force
            log.warning("GPU %s memory settings unchanged: %s", gpu.name, error)


def _configure_gpu(index: int, gpu: Any, fraction: float) -> None:
    total_mb = _gpu_total_mb(index) if fraction > 0 else None
    if total_mb is None:
        if fraction > 0:
            log.warning("cannot read %s's memory size; using memory growth instead of a limit", gpu.name)
        if not tf.config.experimental.get_memory_growth(gpu):
            tf.config.experimental.set_memory_growth(gpu, True)
        return
    limit = tf.config.LogicalDeviceConfiguration(memory_limit=int(total_mb * fraction))
    tf.config.set_logical_device_configuration(gpu, [limit])


def _gpu_total_mb(ordinal: int) -> int | None:
    """Total memory of CUDA device ``ordinal`` from the driver API (TF offers no public query before init)."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
        device, total = ctypes.c_int(), ctypes.c_size_t()
        if cuda.cuInit(0) or cuda.cuDeviceGet(ctypes.byref(device), ordinal):
            return None
        if cuda.cuDeviceTotalMem_v2(ctypes.byref(total), device):
            return None
    except (OSError, AttributeError):
        return None
    return total.value // (1024 * 1024)


# --------------------------------------------------------------------------------------------- inspect


@dataclass(frozen=True, slots=True)
class MetaGraphInfo:
    """One MetaGraphDef: its tag set (as stored), signatures (sorted by key) and the ops it uses (sorted)."""

    tags: tuple[str, ...]
    signatures: Mapping[str, SignatureInfo]
    ops: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SavedModelInfo:
    """What ``saved_model.pb`` declares, without loading variables or running anything."""

    path: str
    meta_graphs: tuple[MetaGraphInfo, ...]

    @property
    def tag_sets(self) -> list[tuple[str, ...]]:
        return [m.tags for m in self.meta_graphs]

    def meta_graph(self, tags: str | Sequence[str]) -> MetaGraphInfo:
        """The MetaGraph whose tag set equals ``tags`` (``"serve,gpu"`` or a sequence); UsageError if none."""
        wanted = parse_tags(tags)
        for meta_graph in self.meta_graphs:
            if set(meta_graph.tags) == set(wanted):
                return meta_graph
        available = ", ".join(repr(",".join(t)) for t in self.tag_sets) or "none"
        raise UsageError(
            f"MetaGraphDef associated with tag-set {','.join(wanted)!r} could not be found in the SavedModel "
            f"at {self.path}; available tag-sets: {available}"
        )


def parse_tags(tags: str | Sequence[str]) -> tuple[str, ...]:
    """``"serve, gpu"`` -> ``("serve", "gpu")``; empty items dropped; at least one tag required."""
    items = tags.split(",") if isinstance(tags, str) else list(tags)
    cleaned = tuple(t.strip() for t in items if t and t.strip())
    if not cleaned:
        raise UsageError("tag_set must contain at least one non-empty tag")
    return cleaned


def inspect_saved_model(path: str) -> SavedModelInfo:
    """Parse the SavedModel in ``path``. Raises UsageError (one line) for a missing folder or bad file."""
    return _info(path, _read_saved_model(path, UsageError))


def _read_saved_model(path: str, error: type[MlsrvError]) -> saved_model_pb2.SavedModel:
    folder = Path(path)
    if not folder.exists():
        raise error(f"SavedModel directory does not exist: {path}")
    if not folder.is_dir():
        raise error(f"not a directory: {path}")
    binary, text = folder / SAVED_MODEL_PB, folder / SAVED_MODEL_PBTXT
    saved_model = saved_model_pb2.SavedModel()
    try:
        if binary.is_file():
            saved_model.ParseFromString(binary.read_bytes())
        elif text.is_file():
            text_format.Parse(text.read_text(encoding="utf-8"), saved_model)
        else:
            raise error(f"no SavedModel in {path}: neither {SAVED_MODEL_PB} nor {SAVED_MODEL_PBTXT} found")
    except (message.DecodeError, text_format.ParseError, UnicodeDecodeError) as exc:
        name = binary.name if binary.is_file() else text.name
        raise error(f"cannot parse {folder / name}: {str(exc).splitlines()[0] if str(exc) else 'invalid'}") from None
    except OSError as exc:
        raise error(f"cannot read SavedModel in {path}: {exc.strerror or exc}") from None
    if not saved_model.meta_graphs:
        raise error(f"SavedModel in {path} contains no MetaGraphDef")
    return saved_model


def _info(path: str, saved_model: saved_model_pb2.SavedModel) -> SavedModelInfo:
    return SavedModelInfo(path=path, meta_graphs=tuple(_meta_graph_info(m) for m in saved_model.meta_graphs))


def _meta_graph_info(meta_graph: meta_graph_pb2.MetaGraphDef) -> MetaGraphInfo:
    signatures = {key: signature_info(meta_graph.signature_def[key]) for key in sorted(meta_graph.signature_def)}
    return MetaGraphInfo(
        tags=tuple(meta_graph.meta_info_def.tags), signatures=signatures, ops=_ops_used(meta_graph.graph_def)
    )


def signature_info(signature: meta_graph_pb2.SignatureDef) -> SignatureInfo:
    """A SignatureDef as protocol types (tensor keys sorted)."""
    return SignatureInfo(
        inputs={k: _tensor_info(signature.inputs[k]) for k in sorted(signature.inputs)},
        outputs={k: _tensor_info(signature.outputs[k]) for k in sorted(signature.outputs)},
        method_name=signature.method_name,
        defaults={k: tensor_codec.to_ndarray(signature.defaults[k]) for k in sorted(signature.defaults)},
    )


def _tensor_info(info: meta_graph_pb2.TensorInfo) -> TensorInfo:
    has_shape = info.HasField("tensor_shape")
    shape = info.tensor_shape
    dims = None if shape.unknown_rank else tuple(d.size for d in shape.dim)
    name = info.name or info.coo_sparse.values_tensor_name
    return TensorInfo(name=name, dtype=dtypes.by_enum(info.dtype).name, shape=dims, has_shape=has_shape)


def _ops_used(graph_def: Any) -> tuple[str, ...]:
    """Primitive ops used by the graph and, transitively, by every function it calls.

    Like saved_model_cli's list, but it also follows functions passed as attributes (``While`` bodies,
    ``If`` branches), so the list answers "which kernels must the server have".
    """
    functions = {f.signature.name: f for f in graph_def.library.function}
    used: set[str] = set()
    pending: list[Any] = []

    def visit(nodes: Iterable[Any]) -> None:
        for node in nodes:
            called = [node.op]
            for attr in node.attr.values():  # f, body, cond, then_branch ...: functions passed as attributes
                called.append(attr.func.name)
                called.extend(f.name for f in attr.list.func)
            for op in called:
                if op and op not in used:
                    used.add(op)
                    if op in functions:
                        pending.append(functions[op])

    visit(graph_def.node)
    while pending:
        visit(pending.pop().node_def)
    return tuple(sorted(used - functions.keys()))


# --------------------------------------------------------------------------------------------- messages


#: TF messages can quote the request (a bad tf.Example is repeated back); longer ones are cut first.
MAX_TF_MESSAGE: Final = 16 * 1024


def clean_tf_message(text: str) -> str:
    """TF's kernel message without eager's ``Graph execution error`` preamble or the ``[Op:...]`` suffix.

    Eager prefixes the kernel message with the Python stack that created each failing node (the
    SavedModel exporter's, meaningless to a client); TF Serving returns only the kernel message.
    The text can be attacker-sized (TF repeats a malformed input in its message), so it is cut to
    :data:`MAX_TF_MESSAGE` characters before anything else, and every step below is linear: an
    earlier regular expression (``\\s*\\[Op:...\\]\\s*$``) backtracked quadratically on long runs
    of whitespace and froze the server for minutes while holding the GIL.
    """
    if len(text) > MAX_TF_MESSAGE:
        text = text[:MAX_TF_MESSAGE] + TRUNCATED_SUFFIX
    lines = text.strip().splitlines()
    if lines and lines[0].startswith("Graph execution error:"):
        start = 1
        while start < len(lines) and _is_trace_line(lines[start]):
            start += 1
        lines = lines[start:] or lines
    return _without_op_suffix("\n".join(lines)).strip()


def _without_op_suffix(text: str) -> str:
    """``text`` without a trailing ``[Op:Name]`` (no ``]`` inside), found from the end in one pass."""
    stripped = text.rstrip()
    if not stripped.endswith("]"):
        return text
    start = stripped.rfind("[Op:")
    if start < 0 or "]" in stripped[start:-1]:
        return text
    return stripped[:start]


def _is_trace_line(line: str) -> bool:
    return not line.strip() or line.startswith(("  ", "Detected at node")) or line == "<stack traces unavailable>"




def serialize_examples(examples: Sequence[Mapping[str, Sequence[Any]]]) -> list[bytes]:
    """Serialized ``tf.train.Example`` per dict of feature lists (saved_model_cli's --input_examples rules).

    Each feature's list type comes from its first item: float -> float_list, int -> int64_list,
    str (UTF-8) or bytes -> bytes_list. Raises UsageError for anything else.
    """
    serialized = []
    for index, features in enumerate(examples):
        if not isinstance(features, Mapping):
            raise UsageError(f"example #{index} must be a dict of feature lists, got {type(features).__name__}")
        feature = {}
        for name, values in features.items():
            feature[str(name)] = _feature(str(name), values)
        example = tf.train.Example(features=tf.train.Features(feature=feature))
        serialized.append(example.SerializeToString())
    return serialized


def _feature(name: str, values: Any) -> tf.train.Feature:
    if not isinstance(values, list | tuple) or not values:
        raise UsageError(f"feature {name!r} must be a non-empty list, got {values!r}")
    first = values[0]
    try:
        if isinstance(first, bool) or not isinstance(first, float | int | str | bytes):
            raise TypeError
        if isinstance(first, float):
            return tf.train.Feature(float_list=tf.train.FloatList(value=values))
        if isinstance(first, int):
            return tf.train.Feature(int64_list=tf.train.Int64List(value=values))
        data = [v.encode() if isinstance(v, str) else v for v in values]
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=data))
    except (TypeError, ValueError):
        raise UsageError(
            f"feature {name!r}: values must all be float, int, str or bytes like the first, got {values!r}"
        ) from None


# --------------------------------------------------------------------------------------------- concrete functions


def list_concrete_functions(path: str) -> dict[str, Any] | None:
    """The "Concrete Functions:" part of ``saved_model_cli show --all`` for the SavedModel in ``path``.

    None when no MetaGraph has an object graph (TF1 exports), where saved_model_cli prints no such block.
    Otherwise ``{"text": ..., "functions": [...] | None, "error": str | None}``: ``text`` is the block exactly
    as saved_model_cli prints it (from its leading newline; its ``\\b\\b`` quirk included), built the same way:
    ``tf.saved_model.load`` in a graph, without the checkpoint. ``functions`` is the same listing as data,
    ``[{"name": ..., "options": [{"arguments": [...], "named_arguments": {...}}]}]``, with each argument
    ``{"kind": "TensorSpec", "name", "dtype": "DT_FLOAT", "shape": [-1, 1] | None}`` or, for other values,
    ``{"kind": <Python type name>, "value": <str>}``. When loading fails, ``functions`` is None and
    ``error`` the reason saved_model_cli gives ("the existence of custom ops in the SavedModel", ...).
    """
    import io
    from collections import abc

    from tensorflow.core.framework import types_pb2
    from tensorflow.python.eager import def_function
    from tensorflow.python.eager import function as defun
    from tensorflow.python.framework import tensor_spec
    from tensorflow.python.saved_model import save

    saved_model = _read_saved_model(path, UsageError)
    if not any(meta_graph.HasField("object_graph_def") for meta_graph in saved_model.meta_graphs):
        return None
    out = io.StringIO()
    out.write("\nConcrete Functions:")
    try:
        with tf.Graph().as_default():
            loaded = tf.saved_model.load(
                path, options=tf.saved_model.LoadOptions(experimental_skip_checkpoint=True)
            )
    except Exception as exc:  # noqa: BLE001 - saved_model_cli reports any failure as N/A, so does mlsrv
        reason = "the existence of custom ops in the SavedModel" if "Op type not registered" in str(exc) else (
            "unknown reasons"
        )
        out.write(f" N/A (could not be listed due to {reason})\n")
        return {"text": out.getvalue(), "functions": None, "error": reason}

    def quoted(value: Any) -> str:
        return f"'{value}'" if isinstance(value, str) else str(value)

    def describe(element: Any) -> dict[str, Any]:
        if isinstance(element, tensor_spec.TensorSpec):
            shape = None if element.shape.rank is None else [-1 if d is None else d for d in element.shape.as_list()]
            dtype = types_pb2.DataType.Name(element.dtype.as_datatype_enum)
            return {"kind": "TensorSpec", "name": element.name, "dtype": dtype, "shape": shape}
        return {"kind": type(element).__name__, "value": element if isinstance(element, str) else str(element)}

    def print_args(arguments: Any, argument_type: str = "Argument", indent: int = 0) -> None:
        # saved_model_cli's _print_args, line for line (the "\b\b" after Value lists is its own)
        pad = "  " * indent
        for index, element in enumerate(arguments, 1):
            if indent == 4:
                out.write(f"{pad}{argument_type} #{index}\n")
            if isinstance(element, str):
                out.write(f"{pad}  {element}\n")
            elif isinstance(element, tensor_spec.TensorSpec):
                out.write((indent + 1) * "  " + f"{element.name}: {element!r}\n")
            elif isinstance(element, abc.Iterable) and not isinstance(element, dict):
                out.write(f"{pad}  DType: {type(element).__name__}\n{pad}  Value: [")
                out.write("".join(f"{quoted(value)}, " for value in element) + "\b\b]\n")
            elif isinstance(element, dict):
                out.write(f"{pad}  DType: {type(element).__name__}\n{pad}  Value: {{")
                out.write("".join(f"'{key}': {quoted(value)}, " for key, value in element.items()) + "\b\b}\n")
            else:
                out.write(f"{pad}  DType: {type(element).__name__}\n{pad}  Value: {element}\n")

    functions = []
    children = sorted(save._AugmentedGraphView(loaded).list_children(loaded), key=lambda child: child.name)
    for name, child in children:
        if isinstance(child, defun.ConcreteFunction):
            concrete = [child]
        elif isinstance(child, def_function.Function):
            concrete = list(child._list_all_concrete_functions_for_serialization())
        else:
            continue
        out.write(f"\n  Function Name: '{name}'\n")
        options = []
        for index, function in enumerate(sorted(concrete, key=lambda f: f.name), 1):
            args, kwargs = None, None
            if function.structured_input_signature:
                args, kwargs = function.structured_input_signature
            elif function._arg_keywords:
                args = function._arg_keywords
            if args:
                out.write(f"    Option #{index}\n      Callable with:\n")
                print_args(args, indent=4)
            if kwargs:
                print_args(kwargs, "Named Argument", indent=4)
            options.append(
                {
                    "arguments": [describe(arg) for arg in args or ()],
                    "named_arguments": {str(key): describe(value) for key, value in (kwargs or {}).items()},
                }
            )
        functions.append({"name": name, "options": options})
    return {"text": out.getvalue(), "functions": functions, "error": None}


def translate_op_error(error: Any) -> MlsrvError:
    """Map a TF error to ours by its canonical code (the same numbering as :class:`Code`)."""
    text = clean_tf_message(error.message)
    try:
        code = Code(error.error_code)
    except ValueError:
        return InternalError(text)
    return error_for_code(code, text) if code is not Code.OK else InternalError(text)


@functools.cache  # TF's profiler server is process-wide: started at most once
def start_profiler_server() -> int:
    """Start TensorFlow's profiler server on a free loopback port (once per process); its port.

    TF binds all interfaces for it: the port is picked free and only mlsrv's forwarder is told it.
    """
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    tf.profiler.experimental.server.start(port)
    return port
