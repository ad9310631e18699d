"""Batcher tensor handling: multi-input and string merge, padding, splitting, equivalence, loop safety."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from mlsrv.errors import FailedPrecondition, InvalidArgument
from mlsrv.server import batch_tensors
from mlsrv.server.batcher import Batcher
from tests.server.batcher_fakes import FakeModel, Tensors, blocked_first, opts, scenario, settle, spawn, x


def test_multiple_inputs_including_strings_are_merged_and_split_per_caller() -> None:
    async def body(b: Batcher, model: FakeModel) -> None:
        first = await blocked_first(b, model)
        reqs = [
            {"x": np.full((n, 3), n, np.float32), "s": np.array([b"r%d-%d" % (n, k) for k in range(n)], object)}
            for n in (1, 2, 3)
        ]
        tasks = spawn(b, *reqs)
        await settle()
        model.release()
        results = await asyncio.gather(first, *tasks)
        assert model.sizes == [1, 6]
        assert model.batches[1]["s"].dtype == object
        for req, out in zip(reqs, results[1:], strict=True):
            np.testing.assert_array_equal(out["y"], req["x"] * 0.5 + 2)
            assert out["t"].tolist() == [v + b"!" for v in req["s"]]

    scenario(body)


def test_batches_are_padded_to_allowed_sizes_but_callers_see_their_rows() -> None:
    seen: list[tuple[int, int, int]] = []

    def on_batch(rows: int, padded: int, delays: Any) -> None:
        seen.append((rows, padded, len(delays)))

    async def main() -> None:
        model = FakeModel()
        with ThreadPoolExecutor(1) as ex:
            options = opts(max_batch_size=8, allowed_batch_sizes=(2, 4, 8))
            async with Batcher(model, ex, options, name="m", on_batch=on_batch) as b:
                first = await blocked_first(b, model)
                tasks = spawn(b, x(1.0), x(2.0), x(3.0, rows=3))
                await settle()
                model.release()
                outs = await asyncio.gather(first, *tasks)
                assert model.sizes == [2, 8]
                # TF pads with copies of the first row of the batch's last task (batching_session.cc)
                np.testing.assert_array_equal(model.batches[0]["x"], np.full((2, 2), -1.0))
                np.testing.assert_array_equal(model.batches[1]["x"][5:], np.full((3, 2), 3.0))
                assert [o["y"].shape[0] for o in outs] == [1, 1, 1, 3]
                np.testing.assert_array_equal(outs[3]["y"], np.full((3, 2), 3.5))
                stats = b.stats()
                assert (stats.input_rows, stats.processed_rows, stats.padding_rows) == (6, 10, 4)
                assert stats.queue_delay_s_max >= 0 and stats.queue_delay_s_sum >= stats.queue_delay_s_max
        assert seen == [(1, 2, 1), (5, 8, 3)]

    asyncio.run(main())


def test_large_task_is_split_across_execution_batches_and_reassembled() -> None:
    async def body(b: Batcher, model: FakeModel) -> None:
        first = await blocked_first(b, model)
        big = {"x": np.arange(20, dtype=np.float32).reshape(10, 2)}
        small, large = spawn(b, x(7.0, rows=3), big)
        await settle()
        model.release()
        out_small, out_large = await asyncio.gather(small, large)
        await first
        assert model.sizes == [1, 4, 4, 4, 1]  # 3 + 1 | 4 | 4 | 1 (TF fills the open batch first)
        np.testing.assert_array_equal(out_large["y"], big["x"] * 0.5 + 2)
        np.testing.assert_array_equal(out_small["y"], np.full((3, 2), 5.5))
        with pytest.raises(InvalidArgument, match="^Task size 11 is larger than maximum input batch size 10$"):
            await b.submit(x(1.0, rows=11))

    scenario(body, max_batch_size=10, enable_large_batch_splitting=True, max_execution_batch_size=4)


def test_wrong_output_batch_size_fails_the_batch() -> None:
    async def main() -> None:
        with ThreadPoolExecutor(1) as ex:
            async with Batcher(lambda i: {"y": np.zeros((1,))}, ex, opts(), name="m") as b:
                results = await asyncio.gather(*spawn(b, x(1.0), x(2.0)), return_exceptions=True)
                assert all(isinstance(r, FailedPrecondition) and "'y'" in r.message for r in results)
            async with Batcher(lambda i: {"y": np.float32(1) * np.ones(())}, ex, opts(), name="m") as b:
                with pytest.raises(FailedPrecondition, match="0 dimensions"):
                    await b.submit(x(1.0))

    asyncio.run(main())


def test_variable_length_inputs_are_padded_when_enabled() -> None:
    async def body(b: Batcher, model: FakeModel) -> None:
        first = await blocked_first(b, model)
        short = {"x": np.array([[5, 6]], np.int64)}
        long = {"x": np.array([[1, 2, 3], [4, 5, 6]], np.int64)}
        words = [{"s": np.array([[b"a"]], object)}, {"s": np.array([[b"b", b"c"]], object)}]
        tasks = spawn(b, short, long) + spawn(b, *words)
        await settle()
        model.release()
        out_short, out_long, out_a, out_bc = await asyncio.gather(*tasks)
        await first
        assert model.sizes == [1, 3, 2]  # different rank/dtype/names -> separate batches
        assert model.batches[1]["x"].tolist() == [[5, 6, 5], [1, 2, 3], [4, 5, 6]]  # padded with own x[0]
        assert out_short["y"].tolist() == [[4.5, 5.0, 4.5]]
        np.testing.assert_array_equal(out_long["y"], long["x"] * 0.5 + 2)
        assert model.batches[2]["s"].tolist() == [[b"a", b"a"], [b"b", b"c"]]
        assert out_a["t"].tolist() == [[b"a!", b"a!"]] and out_bc["t"].tolist() == [[b"b!", b"c!"]]

    scenario(body, pad_variable_length_inputs=True)


def test_differing_trailing_dims_run_in_separate_batches_without_padding() -> None:
    async def body(b: Batcher, model: FakeModel) -> None:
        first = await blocked_first(b, model)
        tasks = spawn(b, x(1.0, cols=2), x(2.0, cols=3), x(3.0, cols=3))
        await settle()
        model.release()
        outs = await asyncio.gather(first, *tasks)
        assert model.sizes == [1, 1, 2]
        assert [o["y"].shape for o in outs] == [(1, 2), (1, 2), (1, 3), (1, 3)]

    scenario(body)


def test_outputs_equal_unbatched_runs_for_random_task_mixes() -> None:
    rng = np.random.default_rng(1234)
    for trial in range(6):
        splitting = trial % 2 == 1
        max_batch = int(rng.integers(4, 12))
        kw: dict[str, Any] = {"max_batch_size": max_batch, "max_enqueued_batches": 1000}
        if splitting:
            kw |= {"enable_large_batch_splitting": True, "max_execution_batch_size": max(1, max_batch // 3)}
        else:
            kw["allowed_batch_sizes"] = tuple(sorted({1, max_batch // 2 or 1, max_batch}))
        reqs = [
            {
                "x": rng.normal(size=(n, 3)).astype(np.float32),
                "s": np.array([b"%d" % v for v in rng.integers(0, 99, n)], object),
            }
            for n in rng.integers(1, max_batch + 1, size=25)
        ]

        async def body(b: Batcher, model: FakeModel, reqs: list[Tensors] = reqs, splitting: bool = splitting) -> None:
            outs = await asyncio.gather(*spawn(b, *reqs))
            limit = b.options.execution_batch_size
            assert len(model.batches) < len(reqs) or splitting
            assert max(model.sizes) <= limit and sum(model.sizes) >= sum(len(r["x"]) for r in reqs)
            for req, out in zip(reqs, outs, strict=True):
                expected = model(req)  # the same function, unbatched
                assert out.keys() == expected.keys()
                np.testing.assert_array_equal(out["y"], expected["y"])
                assert out["t"].tolist() == expected["t"].tolist()

        scenario(body, **kw)


def test_merging_and_splitting_large_batches_stay_off_the_event_loop(caplog: pytest.LogCaptureFixture) -> None:
    """asyncio debug mode logs loop steps slower than slow_callback_duration; none may be the Batcher's."""
    big = [{"x": np.full((4, 1024, 1024), float(i), np.float32)} for i in range(8)]  # 16 MiB each

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.slow_callback_duration = 0.02  # merging 128 MiB on the loop takes ~50 ms
        model = FakeModel()
        with ThreadPoolExecutor(1) as ex:
            async with Batcher(model, ex, opts(max_batch_size=64), name="m") as b:
                first = await blocked_first(b, model)
                tasks = spawn(b, *big)
                await settle()
                model.release()
                outs = await asyncio.gather(*tasks)
                await first
        assert model.sizes == [1, 32]
        assert [float(o["y"][0, 0, 0]) for o in outs] == [i * 0.5 + 2 for i in range(8)]

    with caplog.at_level(logging.WARNING, logger="asyncio"):
        asyncio.run(asyncio.wait_for(main(), 20), debug=True)
    slow = [r.getMessage() for r in caplog.records if "took" in r.getMessage()]
    assert not [m for m in slow if "Batcher." in m], slow  # other steps may be slow on a busy machine


def test_pad_to_common_shape_uses_each_tensors_first_element_or_zero_when_empty() -> None:
    a = np.array([[7, 8]], np.int32)
    b = np.zeros((1, 0), np.int32)
    c = np.array([[1, 2, 3]], np.int32)
    padded = batch_tensors.pad_to_common_shape([a, b, c])
    assert [p.tolist() for p in padded] == [[[7, 8, 7]], [[0, 0, 0]], [[1, 2, 3]]]
    assert padded[2] is c  # already the right shape: no copy
    s = batch_tensors.pad_to_common_shape([np.zeros((1, 0), object), np.array([[b"q", b"r"]], object)])
    assert s[0].tolist() == [[b"", b""]]


def test_execute_batch_merges_pads_and_splits_by_rows() -> None:
    seen: list[Tensors] = []

    def run(inputs: Mapping[str, np.ndarray]) -> Tensors:
        seen.append(dict(inputs))
        return {"y": inputs["x"] * 10}

    parts = [{"x": np.array([[1], [2]])}, {"x": np.array([[3]])}]
    outs = batch_tensors.execute_batch(run, parts, [2, 1], 4, False)
    assert seen[0]["x"].tolist() == [[1], [2], [3], [3]]  # padded with the last task's first row
    assert [o["y"].tolist() for o in outs] == [[[10], [20]], [[30]]]
    single = {"x": np.array([[5]])}
    assert batch_tensors.execute_batch(run, [single], [1], 1, False)[0]["y"].tolist() == [[50]]
    assert seen[1]["x"] is single["x"]  # one unpadded task: passed through without a copy
    joined = batch_tensors.join_parts([{"y": np.array([1, 2])}, {"y": np.array([3])}])
    assert joined["y"].tolist() == [1, 2, 3]
