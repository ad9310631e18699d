"""The Prometheus page, byte for byte as TF Serving's ``prometheus_exporter.cc`` (and its tests) writes it."""

from __future__ import annotations

import numpy as np
import pytest

from mlsrv import flags
from mlsrv.server.metrics import (
    BATCH_SIZE_BUCKETS,
    EXAMPLE_BUCKETS,
    LATENCY_BUCKETS,
    QUEUING_BUCKETS,
    Counter,
    Histogram,
    Metrics,
    exponential_buckets,
    format_double,
    label_name,
    label_value,
    metric_name,
)

#: TF Serving's exported prefix.
TFS = ":tensorflow:serving:"


def page(*metrics: Counter | Histogram) -> str:
    return "\n".join(line for metric in metrics for line in metric.lines()) + "\n"


def test_counter_as_tf_exporter_test() -> None:
    counter = Counter("/test/path/total", ("name",))
    counter.inc(("abc",), 2)
    assert page(counter) == '# TYPE :test:path:total counter\n:test:path:total{name="abc"} 2\n'


def test_histogram_as_tf_exporter_test() -> None:
    histogram = Histogram("/test/path/histogram", ("status",), exponential_buckets(1, 2, 10))
    for value in (2, 20, 200):
        histogram.observe(("good",), value)
    cumulative = {"1": 0, "2": 0, "4": 1, "8": 1, "16": 1, "32": 2, "64": 2, "128": 2, "256": 3, "512": 3, "+Inf": 3}
    expected = ["# TYPE :test:path:histogram histogram"]
    expected += [f':test:path:histogram_bucket{{status="good",le="{le}"}} {n}' for le, n in cumulative.items()]
    expected += [':test:path:histogram_sum{status="good"} 222', ':test:path:histogram_count{status="good"} 3']
    assert page(histogram) == "\n".join(expected) + "\n"


def test_label_less_samples_print_braces() -> None:
    counter = Counter("/a/runs")
    counter.inc()
    histogram = Histogram("/a/sizes", (), (1.0, 2.0))
    histogram.observe((), 1.5)
    histogram.observe((), 7)
    assert page(counter, histogram) == (
        "# TYPE :a:runs counter\n"
        ":a:runs{} 1\n"
        "# TYPE :a:sizes histogram\n"
        ':a:sizes_bucket{le="1"} 0\n'
        ':a:sizes_bucket{le="2"} 1\n'
        ':a:sizes_bucket{le="+Inf"} 2\n'
        ":a:sizes_sum{} 8.5\n"
        ":a:sizes_count{} 2\n"
    )


def test_value_equal_to_a_limit_goes_to_the_next_bucket_as_tf_upper_bound() -> None:
    histogram = Histogram("/h", (), (10.0, 18.0))
    histogram.observe((), 10)
    assert list(histogram.lines())[1:4] == [':h_bucket{le="10"} 0', ':h_bucket{le="18"} 1', ':h_bucket{le="+Inf"} 1']


def test_samples_sorted_by_label_values_and_escaped() -> None:
    counter = Counter("/test/path/total", ("my-name+1",))
    counter.inc(("b",))
    counter.inc(('"abc\\"',), 2)
    counter.inc(("a",), 3)
    assert page(counter).splitlines() == [
        "# TYPE :test:path:total counter",
        ':test:path:total{my_name_1="\\"abc\\\\\\""} 2',
        ':test:path:total{my_name_1="a"} 3',
        ':test:path:total{my_name_1="b"} 1',
    ]


@pytest.mark.parametrize(
    ("raw", "mangled"),
    [
        ("/tensorflow/serving/request_count", ":tensorflow:serving:request_count"),
        ("0/path-total_count", "_0:path:total_count"),
        (
            "/tensorflow/serving/batching_session/queuing_latency",
            ":tensorflow:serving:batching_session:queuing_latency",
        ),
    ],
)
def test_metric_name_mangling(raw: str, mangled: str) -> None:
    assert metric_name(raw) == mangled


def test_label_name_and_value_sanitizing() -> None:
    assert label_name("my-name+1") == "my_name_1"
    assert label_name("9lives") == "_9lives"
    assert label_name("API") == "API"
    assert label_value('a\\b"c') == 'a\\\\b\\"c'


def test_bucket_bounds_text() -> None:
    latency = [format_double(b) for b in LATENCY_BUCKETS]
    assert len(latency) == 33
    assert latency[:7] == ["10", "18", "32.4", "58.32", "104.976", "188.957", "340.122"]
    assert latency[-1] == "1.47476e+09"
    queuing = [format_double(b) for b in QUEUING_BUCKETS]
    assert len(queuing) == 52 and queuing[:5] == ["100", "120", "144", "172.8", "207.36"]
    assert [format_double(b) for b in EXAMPLE_BUCKETS] == [str(2**k) for k in range(15)]
    assert [format_double(b) for b in BATCH_SIZE_BUCKETS] == [str(2**k) for k in range(14)]
    assert format_double(222.0) == "222" and format_double(1234567.0) == "1.23457e+06"


def test_server_metrics_page_order_and_types() -> None:
    metrics = Metrics()
    types = [line for line in metrics.render().splitlines() if line.startswith("# TYPE")]
    assert types == [  # registered at start-up in TF, sorted by TF name; the batch-size ones appear on first use
        "# TYPE :tensorflow:cc:saved_model:load_attempt_count counter",
        "# TYPE :tensorflow:cc:saved_model:load_latency counter",
        "# TYPE :tensorflow:serving:batching_session:queuing_latency histogram",
        "# TYPE :tensorflow:serving:batching_session:wrapped_run_count counter",
        "# TYPE :tensorflow:serving:model_warmup_latency histogram",
        "# TYPE :tensorflow:serving:request_count counter",
        "# TYPE :tensorflow:serving:request_example_count_total counter",
        "# TYPE :tensorflow:serving:request_example_counts histogram",
        "# TYPE :tensorflow:serving:request_latency histogram",
        "# TYPE :tensorflow:serving:runtime_latency histogram",
    ]
    assert metrics.render() == "\n".join(types) + "\n"


def test_request_latency_only_for_ok() -> None:
    metrics = Metrics()
    metrics.record_request("m", "OK", "predict", "REST", 25)
    metrics.record_request("m", "NOT_FOUND", "predict", "REST", 99)
    metrics.record_request("", "INVALID_ARGUMENT", "", "REST", 5)
    assert metrics.request_count.cells == {("m", "OK"): 1, ("m", "NOT_FOUND"): 1, ("", "INVALID_ARGUMENT"): 1}
    assert list(metrics.request_latency.cells) == [("m", "predict", "REST")]
    text = metrics.render()
    assert f'{TFS}request_latency_bucket{{model_name="m",API="predict",entrypoint="REST",le="32.4"}} 1\n' in text
    assert f'{TFS}request_latency_sum{{model_name="m",API="predict",entrypoint="REST"}} 25\n' in text
    assert f'{TFS}request_count{{model_name="",status="INVALID_ARGUMENT"}} 1\n' in text


def test_examples_runtime_and_batching_hooks() -> None:
    metrics = Metrics()
    metrics.record_examples("m", 3)
    metrics.record_runtime("m", "Regress", 40)
    metrics.record_batch_input({"a": np.zeros((3, 2)), "b": np.zeros((3,))})
    metrics.batch_callback("batch_threads")(3, 4, [0.0002, 0.00015])
    text = metrics.render()
    assert f'{TFS}request_example_counts_bucket{{model="m",le="4"}} 1\n' in text
    assert f'{TFS}request_example_count_total{{model="m"}} 3\n' in text
    assert f'{TFS}runtime_latency_count{{model_name="m",API="Regress",runtime="TF1"}} 1\n' in text
    assert f"{TFS}batching_session:input_batch_size_count{{}} 2\n" in text  # once per input tensor
    assert f"{TFS}batching_session:processed_batch_size_sum{{}} 4\n" in text
    assert f'{TFS}batching_session:padding_size_sum{{execution_batch_size="4"}} 1\n' in text
    assert f'{TFS}batching_session:queuing_latency_bucket{{thread_pool_name="batch_threads",le="172.8"}} 1\n' in text
    assert f'{TFS}batching_session:queuing_latency_sum{{thread_pool_name="batch_threads"}} 350\n' in text
    assert f"{TFS}batching_session:wrapped_run_count{{}} 1\n" in text


def test_flag_is_implemented() -> None:
    assert flags.BY_NAME["monitoring_config_file"].implemented
    assert "monitoring_config_file" not in flags.unimplemented({"monitoring_config_file": "/m.txt"})


def test_pages_of_several_workers_sum_sample_by_sample_within_their_families() -> None:
    from mlsrv.server.metrics import sum_pages

    first = '# TYPE a counter\na{m="x"} 2\n# TYPE h histogram\nh_bucket{le="1"} 1\nh_sum 0.5\nh_count 1\n'
    second = '# TYPE a counter\na{m="y"} 5\na{m="x"} 3\n# TYPE h histogram\nh_bucket{le="1"} 2\nh_sum 1.25\nh_count 2\n'
    assert sum_pages([first, second]) == (
        '# TYPE a counter\na{m="x"} 5\na{m="y"} 5\n'  # y, seen only on the second worker, stays under a's TYPE
        '# TYPE h histogram\nh_bucket{le="1"} 3\nh_sum 1.75\nh_count 3\n'
    )
    assert sum_pages([first]) == first
