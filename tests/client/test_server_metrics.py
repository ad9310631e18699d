"""``mlsrv bench``'s reading of the server's Prometheus page: the figures match what the server recorded."""

from __future__ import annotations

from mlsrv.client.server_metrics import difference, parse_page
from mlsrv.server.admission import Admission, AdmissionLimits
from mlsrv.server.batching_pool import QueueTotals
from mlsrv.server.metrics import Metrics


def test_the_difference_of_two_real_pages_gives_mean_batch_queue_wait_and_refusals() -> None:
    metrics, admission = Metrics(), Admission(AdmissionLimits(max_requests=1, max_bytes=1 << 20))
    queues = {"m": QueueTotals(), "other": QueueTotals()}
    metrics.watch_admission(admission, lambda: queues)
    on_batch = metrics.batch_callback("pool")
    on_batch(3, 4, [0.001, 0.002, 0.003])  # before the run: must not count
    before = parse_page(metrics.render())

    on_batch(6, 8, [0.002] * 6)
    on_batch(2, 2, [0.004, 0.004])
    ticket = admission.admit(10)
    for _ in range(3):
        try:
            admission.admit(10)
        except Exception:
            pass
    ticket.release()
    queues["m"] = QueueTotals(queued_rows=5, rejected_full=2, expired=4, cancelled=1)
    queues["other"] = QueueTotals(expired=100)
    stats = difference("url", before, parse_page(metrics.render()), "m")

    assert stats.batches == 2 and stats.mean_batch_size == 5.0  # (8 + 2) processed rows / 2 batches
    assert stats.mean_queue_wait_ms == 2.5  # (6 x 2 ms + 2 x 4 ms) / 8 tasks
    assert stats.rejected == {"batch_queue_full": 2, "bytes": 0, "model_queue": 0, "requests": 3}
    assert (stats.deadline_dropped, stats.cancelled) == (4, 1)  # the benched model's only
    assert "mean batch 5.0 rows" in stats.summary_line() and "requests 3" in stats.summary_line()


def test_labels_with_escapes_and_lines_that_do_not_parse() -> None:
    page = parse_page(
        '# TYPE x counter\nx{a="q\\"uote,d",b="c"} 3\nbroken{ 1\ny 2.5\nz NaN\nw{a="1"} notanumber\n'
    )
    assert page == {"x": {(("a", 'q"uote,d'), ("b", "c")): 3.0}, "y": {(): 2.5}}


def test_a_page_that_cannot_be_read_is_a_note() -> None:
    stats = difference("http://h/metrics", "no metrics page at http://h/metrics: HTTP 404", {}, "m")
    assert stats.note.endswith("HTTP 404") and stats.summary_line().startswith("server: no metrics page")
