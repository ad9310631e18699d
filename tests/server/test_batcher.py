"""Batcher scheduling: batches form as TF forms them; queue bound, cancellation, deadlines, failures, stop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from mlsrv.errors import DeadlineExceeded, InternalError, InvalidArgument, Overloaded
from mlsrv.server.batch_queue import QUEUE_FULL, QUEUE_TIMEOUT
from mlsrv.server.batcher import Batcher
from tests.server.batcher_fakes import FakeModel, blocked_first, opts, scenario, settle, spawn, x


def test_concurrent_submits_share_one_run_and_get_their_own_rows() -> None:
    async def body(b: Batcher, model: FakeModel) -> None:
        first = await blocked_first(b, model)
        tasks = spawn(b, *(x(float(i), rows=1 + i % 3) for i in range(10)))
        await settle()
        model.release()
        results = await asyncio.gather(*tasks)
        assert model.sizes == [1, sum(1 + i % 3 for i in range(10))]
        for i, out in enumerate(results):
            assert out["y"].shape == (1 + i % 3, 2)
            np.testing.assert_array_equal(out["y"], np.float32(i) * 0.5 + 2)
        assert (await first)["y"].tolist() == [[1.5, 1.5]]
        assert model.threads and threading.get_ident() not in model.threads
        stats = b.stats()
        assert (stats.batches, stats.tasks, stats.input_rows, stats.padding_rows) == (2, 11, 20, 0)

    scenario(body)


def test_timeout_flushes_a_partial_batch_after_the_window() -> None:
    async def body(b: Batcher, model: FakeModel) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        outs = await asyncio.gather(*spawn(b, x(1.0), x(2.0), x(3.0)))
        assert loop.time() - t0 >= 0.05
        assert model.sizes == [3]
        assert [o["y"][0, 0] for o in outs] == [2.5, 3.0, 3.5]
        assert b.stats().queue_delay_s_max >= 0.05

    scenario(body, max_batch_size=100, batch_timeout_s=0.06)


def test_a_full_batch_does_not_wait_for_the_timeout() -> None:
    async def body(b: Batcher, model: FakeModel) -> None:
        outs = await asyncio.wait_for(asyncio.gather(*spawn(b, x(1.0, rows=2), x(2.0, rows=2))), 5)
        assert model.sizes == [4] and len(outs) == 2

    scenario(body, max_batch_size=4, batch_timeout_s=60.0)


def test_full_queue_rejects_immediately_with_tf_message() -> None:
    async def body(b: Batcher, model: FakeModel) -> None:
        first = await blocked_first(b, model)
        queued = spawn(b, x(1.0), x(2.0))  # 2 rows = 1 batch of max_batch_size 2: the queue is full
        await settle()
        with pytest.raises(Overloaded) as info:
            await b.submit(x(3.0))
        assert info.value.message.startswith(QUEUE_FULL)
        assert info.value.message == f"{QUEUE_FULL}; currently 1 batches enqueued and max_enqueued_batches is 1"
        assert b.stats().rejected_full == 1 and b.stats().queued_rows == 2
        model.release()
        assert len(await asyncio.gather(first, *queued)) == 3
        await b.submit(x(4.0))  # room again

    scenario(body, max_batch_size=2, max_enqueued_batches=1)


def test_cancelled_caller_is_skipped_and_frees_queue_room() -> None:
    async def body(b: Batcher, model: FakeModel) -> None:
        first = await blocked_first(b, model)
        a, gone, c = spawn(b, x(1.0), x(2.0, rows=3), x(3.0))
        await settle()
        assert b.stats().queued_rows == 5
        gone.cancel()
        await settle()
        assert b.stats().queued_rows == 2
        model.release()
        out_a, out_c = await asyncio.gather(a, c)
        await first
        assert model.sizes == [1, 2]
        assert model.batches[1]["x"][:, 0].tolist() == [1.0, 3.0]
        assert out_a["y"][0, 0] == 2.5 and out_c["y"][0, 0] == 3.5
        assert gone.cancelled() and b.stats().cancelled == 1

    scenario(body)


def test_expired_deadline_gives_deadline_exceeded() -> None:
    async def body(b: Batcher, model: FakeModel) -> None:
        loop = asyncio.get_running_loop()
        with pytest.raises(DeadlineExceeded):  # already past: rejected at once
            await b.submit(x(1.0), loop.time() - 1)
        first = await blocked_first(b, model)
        deadline = loop.time() + 0.2
        late, fine = spawn(b, x(2.0), deadline=deadline)[0], spawn(b, x(3.0))[0]
        await settle()
        assert b.stats().queued_rows == 2  # both queued before the deadline
        await asyncio.sleep(deadline - loop.time() + 0.01)  # the deadline passes while they wait
        assert late.done() and b.stats().queued_rows == 1  # answered at its deadline, the model still busy
        model.release()
        with pytest.raises(DeadlineExceeded) as info:
            await late
        assert info.value.message == QUEUE_TIMEOUT
        assert (await fine)["y"][0, 0] == 3.5
        await first
        assert model.sizes == [1, 1] and b.stats().expired == 1

    scenario(body)


def test_every_caller_is_answered_at_its_own_deadline_whatever_their_order() -> None:
    """Deadlines in arrival order share one timer, set again each time it fires; one earlier than
    the last watched is answered on time too; a caller whose rows are running is answered as well."""

    async def body(b: Batcher, model: FakeModel) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        model.hold()
        running = spawn(b, x(-1.0), deadline=start + 0.2)[0]
        await model.started()  # its rows are in the batch the model holds
        second = spawn(b, x(1.0), deadline=start + 0.4)[0]
        earlier = spawn(b, x(2.0), deadline=start + 0.3)[0]  # after `second`, yet due first
        last = spawn(b, x(3.0), deadline=start + 0.5)[0]
        patient = spawn(b, x(4.0))[0]
        answered: dict[str, float] = {}
        tasks = {"running": running, "earlier": earlier, "second": second, "last": last}
        for name, task in tasks.items():
            task.add_done_callback(lambda _, name=name: answered.setdefault(name, loop.time() - start))
        done, _ = await asyncio.wait(tasks.values(), timeout=3)
        assert len(done) == 4, f"answered: {answered}"
        slack = 0.002  # timers fire up to a millisecond early
        assert 0.2 - slack <= answered["running"] < 0.3 - slack <= answered["earlier"] < 0.4, answered
        assert 0.4 - slack <= answered["second"] < 0.5 - slack <= answered["last"], answered
        assert b.stats().queued_rows == 1 and not patient.done()  # their rows given back, not computed
        model.release()
        assert (await patient)["y"][0, 0] == 4.0 * 0.5 + 2
        messages = [_raises(task).value.message for task in tasks.values()]
        assert messages == ["Deadline Exceeded"] + [QUEUE_TIMEOUT] * 3
        assert model.sizes == [1, 1] and b.stats().expired == 4

    scenario(body)


def test_a_deadline_is_kept_after_a_longer_one_that_was_answered() -> None:
    """The shared timer, set for a task answered since, is moved for a new task due sooner."""

    async def body(b: Batcher, model: FakeModel) -> None:
        loop = asyncio.get_running_loop()
        await b.submit(x(1.0), loop.time() + 30)  # answered at once; the timer stays set 30 s ahead
        first = await blocked_first(b, model)
        short = spawn(b, x(2.0), deadline=loop.time() + 0.2)[0]
        done, _ = await asyncio.wait({short}, timeout=2)
        assert short in done  # answered at its deadline, not 30 s later
        assert _raises(short).value.message == QUEUE_TIMEOUT
        model.release()
        await first

    scenario(body)


def test_a_caller_whose_own_timeout_fires_at_its_deadline_counts_as_expired_not_cancelled() -> None:
    """Whichever fires first at the deadline, the batcher's timer or the caller's own timeout, the task
    counts once, as expired (the metrics' deadline drops), and its rows are given back."""

    async def body(b: Batcher, model: FakeModel) -> None:
        loop = asyncio.get_running_loop()
        first = await blocked_first(b, model)
        deadline = loop.time() + 0.2
        with pytest.raises((asyncio.TimeoutError, DeadlineExceeded)):  # the caller's own timeout, 1 ms early
            await asyncio.wait_for(b.submit(x(1.0), deadline), deadline - loop.time() - 0.001)
        leaving = spawn(b, x(2.0), deadline=loop.time() + 30)[0]
        await settle()
        leaving.cancel()  # long before its deadline: the client went away
        await settle()
        assert (b.stats().expired, b.stats().cancelled, b.stats().queued_rows) == (1, 1, 0)
        model.release()
        await first

    scenario(body)


def _raises(task: asyncio.Task[Any]) -> pytest.ExceptionInfo[DeadlineExceeded]:
    with pytest.raises(DeadlineExceeded) as info:
        task.result()
    return info


def test_failing_batch_fails_all_its_callers_and_the_next_batch_succeeds() -> None:
    def fail(inputs: Mapping[str, np.ndarray]) -> Exception | None:
        values = set(inputs["x"][:, 0].tolist())
        if 13.0 in values:
            return InvalidArgument("bad row 13")
        if 66.0 in values:
            return ZeroDivisionError("boom")
        return None

    async def body(b: Batcher, model: FakeModel) -> None:
        first = await blocked_first(b, model)
        doomed = spawn(b, x(13.0), x(1.0))
        await settle()
        model.release()
        await first
        errors = await asyncio.gather(*doomed, return_exceptions=True)
        assert all(isinstance(e, InvalidArgument) and e.message == "bad row 13" for e in errors)
        assert errors[0] is not errors[1]  # each caller gets its own exception object

        crashing = await asyncio.gather(*spawn(b, x(66.0), x(2.0)), return_exceptions=True)
        assert all(isinstance(e, InternalError) and "ZeroDivisionError: boom" in e.message for e in crashing)

        ok = await b.submit(x(4.0))
        assert ok["y"][0, 0] == 4.0
        assert b.stats().failed_batches == 2

    scenario(body, fail=fail)


def test_task_larger_than_max_batch_size_is_rejected_without_splitting() -> None:
    async def body(b: Batcher, model: FakeModel) -> None:
        with pytest.raises(InvalidArgument, match="^Task size 5 is larger than maximum input batch size 4$"):
            await b.submit(x(1.0, rows=5))
        assert model.batches == []

    scenario(body, max_batch_size=4)


def test_invalid_batch_dimensions_are_rejected_before_queueing() -> None:
    async def body(b: Batcher, model: FakeModel) -> None:
        with pytest.raises(InvalidArgument, match="must have equal 0th-dimension size"):
            await b.submit({"x": np.zeros((2, 2), np.float32), "s": np.zeros((3,), object)})
        with pytest.raises(InvalidArgument, match="must have at least one dimension"):
            await b.submit({"x": np.float32(1.0) * np.ones((), np.float32)})
        with pytest.raises(InvalidArgument, match="at least one input tensor"):
            await b.submit({})
        assert model.batches == []

    scenario(body)


def test_stop_flushes_the_gather_window_finishes_queued_work_and_rejects_new_submits() -> None:
    async def body(b: Batcher, model: FakeModel) -> None:
        model.hold()
        waiting = spawn(b, x(1.0), x(2.0))  # inside a 30 s gather window
        await settle()
        assert model.batches == []
        stopping = asyncio.ensure_future(b.stop())
        assert await model.started() == 2  # stop() closed the window at once
        with pytest.raises(Overloaded, match="shutting down"):
            await b.submit(x(3.0))
        model.release()
        await stopping
        assert [o["y"][0, 0] for o in await asyncio.gather(*waiting)] == [2.5, 3.0]
        with pytest.raises(Overloaded):
            await b.submit(x(3.0))
        await b.start()  # a stopped batcher can be started again
        assert (await b.submit(x(4.0, rows=8)))["y"][0, 0] == 4.0

    scenario(body, max_batch_size=8, batch_timeout_s=30.0)


def test_stop_with_timeout_fails_waiting_callers_when_the_model_hangs() -> None:
    async def body(b: Batcher, model: FakeModel) -> None:
        first = await blocked_first(b, model)
        queued = spawn(b, x(1.0))
        await settle()
        await b.stop(timeout=0.05)
        for fut in (first, queued[0]):
            with pytest.raises(Overloaded, match="shutting down"):
                await fut

    scenario(body)


def test_submit_before_start_is_rejected() -> None:
    async def main() -> None:
        with ThreadPoolExecutor(1) as ex:
            b = Batcher(lambda i: dict(i), ex, opts(), name="m")
            with pytest.raises(Overloaded, match="not accepting"):
                await b.submit(x(1.0))
            await b.stop()  # no-op

    asyncio.run(main())


def test_several_batch_threads_run_batches_concurrently() -> None:
    async def main() -> None:
        model = FakeModel()
        with ThreadPoolExecutor(2) as ex:
            async with Batcher(model, ex, opts(num_batch_threads=2, max_batch_size=1), name="m") as b:
                model.hold()
                tasks = spawn(b, x(1.0), x(2.0), x(3.0))
                assert {await model.started(), await model.started()} == {1}
                assert b.stats().running_batches == 2
                model.release()
                assert [o["y"][0, 0] for o in await asyncio.gather(*tasks)] == [2.5, 3.0, 3.5]

    asyncio.run(main())


def test_window_whose_tasks_were_all_cancelled_waits_for_the_next_task() -> None:
    async def body(b: Batcher, model: FakeModel) -> None:
        (gone,) = spawn(b, x(1.0))
        await settle()
        gone.cancel()
        await asyncio.sleep(0.08)  # let the 50 ms gather window close with nothing left in it
        assert model.batches == [] and b.stats().batches == 0
        assert (await b.submit(x(2.0)))["y"][0, 0] == 3.0
        assert model.sizes == [1]

    scenario(body, batch_timeout_s=0.05)


def test_full_queue_message_with_splitting_reports_capacity() -> None:
    async def body(b: Batcher, model: FakeModel) -> None:
        first = await blocked_first(b, model)
        queued = spawn(b, x(1.0, rows=3))
        await settle()
        with pytest.raises(Overloaded) as info:
            await b.submit(x(2.0, rows=2))
        assert info.value.message == (
            f"{QUEUE_FULL}; task size is 2 but scheduling capacity is only 1 (num_enqueued_batches=2, "
            "max_enqueued_batches=2, max_execution_batch_size=2)"
        )
        model.release()
        await asyncio.gather(first, *queued)
        assert model.sizes == [1, 2, 1]

    scenario(body, max_batch_size=4, max_enqueued_batches=2, enable_large_batch_splitting=True,
             max_execution_batch_size=2)  # fmt: skip



def _with_in_flight(count: list[int], body: Any, **kw: Any) -> None:
    """Like ``scenario``, with the server's in-flight count read from ``count[0]``."""

    async def main() -> None:
        model = FakeModel()
        with ThreadPoolExecutor(1) as executor:
            batcher = Batcher(model, executor, opts(**kw), name="m", requests_in_flight=lambda: count[0])
            await batcher.start()
            try:
                await asyncio.wait_for(body(batcher, model), 20)
            finally:
                await batcher.stop(timeout=5)

    asyncio.run(main())


def test_a_lone_request_runs_at_once_instead_of_waiting_the_window() -> None:
    """Issue #11 item 3: with nothing else in flight in the server, the 10 s window is skipped."""

    async def body(b: Batcher, model: FakeModel) -> None:
        out = await asyncio.wait_for(b.submit(x(1.0)), 5)  # would wait 10 s under TF's rule
        assert out["y"].tolist() == [[2.5, 2.5]] and model.sizes == [1]

    _with_in_flight([1], body, max_batch_size=32, batch_timeout_s=10.0)


def test_the_window_still_applies_while_other_requests_are_in_flight() -> None:
    """Two more requests are being handled elsewhere in the server: the first task waits for them."""
    in_flight = [3]

    async def body(b: Batcher, model: FakeModel) -> None:
        first = asyncio.ensure_future(b.submit(x(1.0)))
        await settle()
        rest = spawn(b, x(2.0), x(3.0))  # they arrive while the window is open
        outs = await asyncio.gather(first, *rest)
        assert model.sizes == [3]
        assert [o["y"][0, 0] for o in outs] == [2.5, 3.0, 3.5]

    _with_in_flight(in_flight, body, max_batch_size=3, batch_timeout_s=10.0)


def test_tiny_batches_of_the_pool_run_on_the_executor_so_the_loop_keeps_reading() -> None:
    """However fast the model, a batch never runs on the loop: while it runs, requests queue for the next."""
    from mlsrv.server.batching_pool import BatchingPool
    from mlsrv.server.ids import ServableId

    class Tiny:
        def __init__(self) -> None:
            self.threads: set[int] = set()

        def signatures(self) -> dict[str, Any]:
            return {}

        def run(self, signature: str, inputs: Mapping[str, np.ndarray], output_filter: Any = ()) -> dict[str, Any]:
            self.threads.add(threading.get_ident())
            return {"y": inputs["x"] * 0.5 + 2}

    async def main() -> None:
        servable = Tiny()
        with ThreadPoolExecutor(1) as executor:
            pool = BatchingPool(executor, lambda _: opts(max_batch_size=8))
            batcher = await pool.batcher_for(ServableId("m", 1), "serving_default", servable)
            assert batcher is not None
            for i in range(100):  # far past any warm-up a "run tiny batches inline" policy would use
                assert (await batcher.submit(x(float(i))))["y"][0, 0] == i * 0.5 + 2
            await pool.stop()
        assert threading.get_ident() not in servable.threads

    asyncio.run(main())


def test_the_pool_keeps_a_models_drop_counts_after_its_version_unloads() -> None:
    """Counters never go down on the metrics page: an unloaded version's deadline drops stay counted."""
    from mlsrv.protocol.types import State
    from mlsrv.server.batching_pool import BatchingPool
    from mlsrv.server.ids import ServableId
    from mlsrv.server.monitor import StateEvent

    class Gated:
        def __init__(self) -> None:
            self.gate = threading.Event()

        def run(self, signature: str, inputs: Mapping[str, np.ndarray], output_filter: Any = ()) -> dict[str, Any]:
            assert self.gate.wait(5)
            return {"y": inputs["x"] * 0.5 + 2}

    async def main() -> None:
        servable, loop = Gated(), asyncio.get_running_loop()
        with ThreadPoolExecutor(1) as executor:
            pool = BatchingPool(executor, lambda _: opts(max_batch_size=1))
            version = ServableId("m", 1)
            batcher = await pool.batcher_for(version, "serving_default", servable)
            assert batcher is not None
            running = asyncio.ensure_future(batcher.submit(x(1.0)))
            await settle()
            late = asyncio.ensure_future(batcher.submit(x(2.0), loop.time() + 0.05))
            await settle()
            assert pool.queue_totals()["m"].queued_rows == 1
            with pytest.raises(DeadlineExceeded):
                await late
            assert (pool.queue_totals()["m"].expired, pool.queue_totals()["m"].queued_rows) == (1, 0)
            pool.on_state(StateEvent(version, State.UNLOADING, None, loop.time()))
            servable.gate.set()
            await running
            for _ in range(100):
                if not pool._closing:
                    break
                await asyncio.sleep(0.01)
            assert not pool._closing and pool.stats() == {}
            assert pool.queue_totals()["m"].expired == 1  # still counted once its batcher is gone
            await pool.stop()

    asyncio.run(main())
