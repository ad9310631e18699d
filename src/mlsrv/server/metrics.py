"""Per-Server metrics with TF Serving's names, labels and buckets, and its Prometheus text page.

TF Serving keeps its metrics in TensorFlow's process-wide ``CollectionRegistry`` and renders them in
``prometheus_exporter.cc``. mlsrv keeps one :class:`Metrics` per ``Server`` (no global registry, so
tests can run servers side by side) and writes the same page itself: ``prometheus_client`` cannot
print TF's dialect (no ``# HELP`` lines, ``{}`` after a label-less sample, ``%.6g`` numbers).

What the page reproduces, byte for byte:

* metric names: ``/tensorflow/serving/request_count`` -> ``:tensorflow:serving:request_count`` (every
  char outside ``[a-zA-Z0-9_]`` becomes ``:``); label names get ``_`` for non-alphanumerics; ``\\`` and
  ``"`` in label values are escaped; a leading digit gets a ``_`` prefix;
* metrics sorted by their TF name, samples by their label values; one ``# TYPE`` line per metric,
  also for a metric without samples yet (TF registers these at start-up);
* histograms as TF's ``Histogram``: a value goes to the first bucket whose limit is *greater* than it
  (``upper_bound``), so a value equal to a limit lands in the next bucket, as in TF; limits and
  ``_sum`` are printed like ``absl::StrCat(double)`` (``%.6g``: ``10``, ``18``, ``32.4``,
  ``1.45558e+09``), counts as integers; the last bucket is ``le="+Inf"``;
* the page ends with ``\\n``.

Recording is loop-affine (every caller runs on the server's event loop) and costs a dict lookup, an
increment and, for histograms, one ``bisect``. Latencies are integer microseconds, as TF records them.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Final

import numpy as np

from mlsrv.server.batcher import BatchCallback

if TYPE_CHECKING:
    from mlsrv.server.access_log import AccessLog
    from mlsrv.server.admission import Admission
    from mlsrv.server.batching_pool import QueueTotals

_METRIC_CHARS: Final = re.compile(r"[^a-zA-Z0-9_]")
_LABEL_CHARS: Final = re.compile(r"[^a-zA-Z0-9]")

Labels = tuple[str, ...]


def exponential_buckets(scale: float, growth: float, count: int) -> tuple[float, ...]:
    """TF's ``Buckets::Exponential``: ``count`` limits by repeated multiplication (then +Inf)."""
    limits: list[float] = []
    bound = scale
    for _ in range(count):
        limits.append(bound)
        bound *= growth
    return tuple(limits)


#: ``request_latency`` / ``runtime_latency``: 10 * 1.8^k µs, 33 limits (~20 minutes).
LATENCY_BUCKETS: Final = exponential_buckets(10, 1.8, 33)
#: ``batching_session/queuing_latency``: 100 * 1.2^k µs, 52 limits (~1 second).
QUEUING_BUCKETS: Final = exponential_buckets(100, 1.2, 52)
#: ``request_example_counts``: 1, 2, 4 ... 2^14.
EXAMPLE_BUCKETS: Final = exponential_buckets(1, 2, 15)
#: ``batching_session/{input,processed}_batch_size`` and ``padding_size``: 1, 2, 4 ... 2^13.
BATCH_SIZE_BUCKETS: Final = exponential_buckets(1, 2, 14)


def metric_name(name: str) -> str:
    """TF's ``GetPrometheusMetricName``."""
    mangled = _METRIC_CHARS.sub(":", name)
    return "_" + mangled if mangled[:1].isdigit() else mangled


def label_name(name: str) -> str:
    """TF's ``SanatizeLabelName``."""
    mangled = _LABEL_CHARS.sub("_", name)
    return "_" + mangled if mangled[:1].isdigit() else mangled


def label_value(value: str) -> str:
    """TF's ``SanitizeLabelValue``: escape ``\\`` and ``"`` (newlines pass through, as in TF)."""
    return value.replace("\\", "\\\\").replace('"', '\\"')


def format_double(value: float) -> str:
    """``absl::StrCat(double)``: six significant digits, like ``%.6g``."""
    return f"{value:.6g}"


class _Metric:
    """Shared parts: the exported name, the label names and the ``# TYPE`` line."""

    kind = "untyped"

    def __init__(self, name: str, label_names: Sequence[str], *, lazy: bool) -> None:
        self.name = name
        self.exported = metric_name(name)
        self.label_names = tuple(label_name(n) for n in label_names)
        #: TF registers some metrics on first use (function-level statics): no ``# TYPE`` line before.
        self.lazy = lazy

    def _labels(self, values: Labels) -> str:
        return ",".join(f'{n}="{label_value(v)}"' for n, v in zip(self.label_names, values, strict=True))

    def lines(self) -> Iterator[str]:
        raise NotImplementedError


class Counter(_Metric):
    """A monotonically increasing integer per label-value tuple."""

    kind = "counter"

    def __init__(self, name: str, label_names: Sequence[str] = (), *, lazy: bool = False) -> None:
        super().__init__(name, label_names, lazy=lazy)
        self.cells: dict[Labels, int] = {}

    def inc(self, labels: Labels = (), amount: int = 1) -> None:
        self.cells[labels] = self.cells.get(labels, 0) + amount

    def lines(self) -> Iterator[str]:
        if self.lazy and not self.cells:
            return
        yield f"# TYPE {self.exported} {self.kind}"
        for labels in sorted(self.cells):
            yield f"{self.exported}{{{self._labels(labels)}}} {self.cells[labels]}"


class Observed(_Metric):
    """A value read when the page is rendered (gauges, and counters kept by their owner), per labels."""

    def __init__(
        self,
        name: str,
        kind: str,
        label_names: Sequence[str],
        read: Callable[[], dict[Labels, int]],
        *,
        lazy: bool = False,
    ) -> None:
        super().__init__(name, label_names, lazy=lazy)
        self.kind = kind
        self._read = read

    def lines(self) -> Iterator[str]:
        cells = self._read()
        if self.lazy and not cells:
            return
        yield f"# TYPE {self.exported} {self.kind}"
        for labels in sorted(cells):
            label_text = self._labels(labels)
            name = f"{self.exported}{{{label_text}}}" if label_text else self.exported
            yield f"{name} {cells[labels]}"


class _Cell:
    __slots__ = ("counts", "total")

    def __init__(self, buckets: int) -> None:
        self.counts = [0] * buckets
        self.total = 0.0


class Histogram(_Metric):
    """TF's ``Sampler``: fixed bucket limits plus a last +Inf bucket, a sum and a count per labels."""

    kind = "histogram"

    def __init__(self, name: str, label_names: Sequence[str], limits: Sequence[float], *, lazy: bool = False) -> None:
        super().__init__(name, label_names, lazy=lazy)
        self.limits = tuple(limits)
        self._le = tuple(format_double(limit) for limit in self.limits) + ("+Inf",)
        self.cells: dict[Labels, _Cell] = {}

    def observe(self, labels: Labels, value: float) -> None:
        cell = self.cells.get(labels)
        if cell is None:
            cell = self.cells[labels] = _Cell(len(self._le))
        cell.counts[bisect_right(self.limits, value)] += 1
        cell.total += value

    def lines(self) -> Iterator[str]:
        if self.lazy and not self.cells:
            return
        name = self.exported
        yield f"# TYPE {name} {self.kind}"
        for labels in sorted(self.cells):
            cell = self.cells[labels]
            text = self._labels(labels)
            prefix = f"{name}_bucket{{{text},le=" if text else f"{name}_bucket{{le="
            cumulative = 0
            for le, count in zip(self._le, cell.counts, strict=True):
                cumulative += count
                yield f'{prefix}"{le}"}} {cumulative}'
            yield f"{name}_sum{{{text}}} {format_double(cell.total)}"
            yield f"{name}_count{{{text}}} {cumulative}"


class Metrics:
    """One Server's serving metrics (TF Serving's ``util.cc`` and ``batching_session`` metrics).

    Frontends and the DataPlane call the ``record_*`` methods on the event loop; :meth:`render`
    gives the Prometheus page. Created only when monitoring is enabled, so a server without it pays
    nothing (callers hold ``Metrics | None``).
    """

    def __init__(self) -> None:
        self.request_count = Counter("/tensorflow/serving/request_count", ("model_name", "status"))
        self.request_latency = Histogram(
            "/tensorflow/serving/request_latency", ("model_name", "API", "entrypoint"), LATENCY_BUCKETS
        )
        self.runtime_latency = Histogram(
            "/tensorflow/serving/runtime_latency", ("model_name", "API", "runtime"), LATENCY_BUCKETS
        )
        self.request_example_counts = Histogram(
            "/tensorflow/serving/request_example_counts", ("model",), EXAMPLE_BUCKETS
        )
        self.request_example_count_total = Counter("/tensorflow/serving/request_example_count_total", ("model",))
        self.queuing_latency = Histogram(
            "/tensorflow/serving/batching_session/queuing_latency", ("thread_pool_name",), QUEUING_BUCKETS
        )
        self.wrapped_run_count = Counter("/tensorflow/serving/batching_session/wrapped_run_count")
        self.input_batch_size = Histogram(
            "/tensorflow/serving/batching_session/input_batch_size", (), BATCH_SIZE_BUCKETS, lazy=True
        )
        self.processed_batch_size = Histogram(
            "/tensorflow/serving/batching_session/processed_batch_size", (), BATCH_SIZE_BUCKETS, lazy=True
        )
        self.padding_size = Histogram(
            "/tensorflow/serving/batching_session/padding_size",
            ("execution_batch_size",),
            BATCH_SIZE_BUCKETS,
            lazy=True,
        )
        self.model_warmup_latency = Histogram(
            "/tensorflow/serving/model_warmup_latency", ("model_path", "status"), LATENCY_BUCKETS
        )
        # TF core's SavedModel loader metrics, which TF Serving's page carries too (status "success"/"fail")
        self.load_attempt_count = Counter("/tensorflow/cc/saved_model/load_attempt_count", ("model_path", "status"))
        self.load_latency = Counter("/tensorflow/cc/saved_model/load_latency", ("model_path",))
        metrics: list[_Metric] = [value for value in vars(self).values() if isinstance(value, _Metric)]
        self._all = sorted(metrics, key=lambda metric: metric.name)

    def int64_value(self, name: str) -> int:
        """The first point of counter ``name`` (TF's internal name), 0 when unknown or empty.

        What TF's ``ModelServiceImpl::GetMetrics`` reads for ``ReloadConfigRequest.metric_names``.
        """
        for metric in self._all:
            if metric.name == name and isinstance(metric, Counter) and metric.cells:
                return next(iter(metric.cells.values()))
        return 0

    # -- recording (hot path) --

    def record_request(self, model_name: str, status: str, api: str, entrypoint: str, micros: int) -> None:
        """One finished REST or gRPC call: counted always, latency only when ``status`` is ``OK``."""
        self.request_count.inc((model_name, status))
        if status == "OK":
            self.request_latency.observe((model_name, api, entrypoint), micros)

    def record_load(self, model_path: str, ok: bool, micros: int) -> None:
        """One SavedModel load attempt; latency (µs) is summed for successful loads only, as TF does."""
        self.load_attempt_count.inc((model_path, "success" if ok else "fail"))
        if ok:
            self.load_latency.inc((model_path,), micros)

    def record_warmup(self, model_path: str, status: str, micros: int) -> None:
        """A warmup file read to its end ("OK") or that failed to read (TF's status text)."""
        self.model_warmup_latency.observe((model_path, status), micros)

    def record_runtime(self, model_name: str, api: str, micros: int) -> None:
        """A successful model run (``runtime="TF1"``: mlsrv runs the Session path, as TF Serving)."""
        self.runtime_latency.observe((model_name, api, "TF1"), micros)

    def record_examples(self, model_name: str, count: int) -> None:
        """Examples in a classify, regress or multi-inference call that ran."""
        self.request_example_counts.observe((model_name,), count)
        self.request_example_count_total.inc((model_name,), count)

    def record_batch_input(self, inputs: Mapping[str, np.ndarray]) -> None:
        """A request entering a batcher: dim 0 once per input tensor, as ``BatchingSession::ComputeInputSize``."""
        for array in inputs.values():
            self.input_batch_size.observe((), array.shape[0] if array.ndim else 0)

    def batch_callback(self, thread_pool_name: str) -> BatchCallback:
        """The Batcher's ``on_batch`` hook for a batcher whose options name ``thread_pool_name``."""
        labels = (thread_pool_name,)

        def on_batch(rows: int, processed: int, queue_delays_s: Sequence[float]) -> None:
            for delay in queue_delays_s:
                self.queuing_latency.observe(labels, round(delay * 1_000_000))
            self.padding_size.observe((str(processed),), processed - rows)
            self.processed_batch_size.observe((), processed)
            self.wrapped_run_count.inc()

        return on_batch

    def watch_admission(self, admission: Admission, queues: Callable[[], Mapping[str, QueueTotals]]) -> None:
        """mlsrv's overload metrics (TF Serving has none): what is in the server, what was turned away.

        ``queues`` gives the batch queues per model (empty without batching). Rejections by reason:
        ``requests`` and ``bytes`` (admission bounds), ``model_queue`` (a model's learnt batch-queue
        limit, at the door), ``batch_queue_full`` (TF's full batch queue, after decoding);
        ``deadline_dropped_count`` counts requests whose deadline passed while they were queued.
        """

        def rejected() -> dict[Labels, int]:
            cells: dict[Labels, int] = {(reason,): count for reason, count in admission.rejected.items()}
            cells[("batch_queue_full",)] = sum(t.rejected_full for t in queues().values())
            return cells

        watched = [
            Observed("/mlsrv/admission/in_flight_requests", "gauge", (), lambda: {(): admission.requests}),
            Observed("/mlsrv/admission/in_flight_bytes", "gauge", (), lambda: {(): admission.bytes}),
            Observed("/mlsrv/admission/request_limit", "gauge", (), lambda: {(): admission.request_limit}),
            Observed(
                "/mlsrv/admission/model_request_limit",
                "gauge",
                ("model_name",),
                lambda: {(name,): int(load.limit) for name, load in admission.models.items() if load.limit is not None},
            ),
            Observed("/mlsrv/admission/rejected_count", "counter", ("reason",), rejected),
            Observed(
                "/mlsrv/batching/queued_rows",
                "gauge",
                ("model_name",),
                lambda: {(name,): t.queued_rows for name, t in queues().items()},
            ),
            Observed(
                "/mlsrv/batching/deadline_dropped_count",
                "counter",
                ("model_name",),
                lambda: {(name,): t.expired for name, t in queues().items()},
            ),
            Observed(
                "/mlsrv/batching/cancelled_count",
                "counter",
                ("model_name",),
                lambda: {(name,): t.cancelled for name, t in queues().items()},
            ),
        ]
        self._all = sorted([*self._all, *watched], key=lambda metric: metric.name)

    def watch_request_log(self, counts: Callable[[], dict[Labels, int]]) -> None:
        """TF's ``request_log_count{model_name, status_code}``: request-log records written ("OK"),
        dropped because the writer's queue was full ("RESOURCE_EXHAUSTED"), failed ("INTERNAL").
        Kept by the request logger (its writer thread counts), read when the page is rendered."""
        watched = Observed("/tensorflow/serving/request_log_count", "counter", ("model_name", "status_code"), counts,
                           lazy=True)  # fmt: skip
        self._all = sorted([*self._all, watched], key=lambda metric: metric.name)

    def watch_access_log(self, access_log: AccessLog) -> None:
        """Access-log lines dropped because the writer fell behind (``--access_log``)."""
        watched = Observed("/mlsrv/access_log/dropped_count", "counter", (), lambda: {(): access_log.dropped})
        self._all = sorted([*self._all, watched], key=lambda metric: metric.name)

    # -- exposition --

    def render(self) -> str:
        """The Prometheus text page, as TF Serving's ``PrometheusExporter::GeneratePage``."""
        lines = [line for metric in self._all for line in metric.lines()]
        return "\n".join(lines) + "\n"


def sum_pages(pages: Sequence[str]) -> str:
    """Several workers' pages as one: each sample summed over the pages, families in first-seen order.

    Counters, histogram buckets, sums and counts add up to what one server would have counted;
    gauges (requests in flight, queued rows) add up to the host's total. A sample only some workers
    have (a model one worker has not loaded yet) is the sum of those that have it, still listed
    under its own ``# TYPE`` line, as the text format requires.
    """
    families: dict[str, dict[str, tuple[float, bool]]] = {}  # TYPE line -> series -> (sum, all integers)
    for page in pages:
        family = families.setdefault("", {})
        for line in page.splitlines():
            if line.startswith("#"):
                family = families.setdefault(line, {})
                continue
            series, _, text = line.rpartition(" ")
            try:
                value = float(text)
            except ValueError:
                continue
            integral = text.lstrip("-").isdigit()
            total, was_integral = family.get(series, (0.0, True))
            family[series] = (total + value, was_integral and integral)
    lines = []
    for type_line, samples in families.items():
        if type_line:
            lines.append(type_line)
        for series, (total, integral) in samples.items():
            lines.append(f"{series} {int(total) if integral else format_double(total)}")
    return "\n".join(lines) + "\n"
