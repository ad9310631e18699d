"""Inline-vs-executor decisions: only consistently tiny model calls may run on the event loop."""

from __future__ import annotations

from mlsrv.server.inline_policy import MAX_INLINE_BYTES, WARMUP_CALLS, InlinePolicy


def test_fast_calls_go_inline_after_warmup_only() -> None:
    policy = InlinePolicy(threshold_s=100e-6)
    for _ in range(WARMUP_CALLS - 1):
        policy.record("k", 20e-6)
        assert not policy.inline("k", 16)
    policy.record("k", 20e-6)
    assert policy.inline("k", 16)
    assert not policy.inline("k", MAX_INLINE_BYTES + 1)
    assert not policy.inline("other", 16)


def test_one_slow_call_moves_back_to_the_executor() -> None:
    policy = InlinePolicy(threshold_s=100e-6)
    for _ in range(WARMUP_CALLS):
        policy.record("k", 20e-6)
    policy.record("k", 5e-3)
    assert not policy.inline("k", 16)


def test_slow_models_never_go_inline() -> None:
    policy = InlinePolicy(threshold_s=100e-6)
    for _ in range(WARMUP_CALLS * 4):
        policy.record("k", 400e-6)
    assert not policy.inline("k", 16)
