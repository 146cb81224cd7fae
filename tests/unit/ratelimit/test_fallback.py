"""The fallback store while Redis is slow: its answers are waited for, never second-guessed.

A local decision in place of a slow Redis call would admit what Redis may already have
counted or refused (the e2e burst test once saw 102 admitted against a limit of 100): while
the instance is not degraded, every decision is Redis's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from llmproxy.ratelimit import fallback
from llmproxy.ratelimit.errors import StoreError
from llmproxy.ratelimit.fallback import FallbackLimitStore
from llmproxy.ratelimit.memory_store import MemoryLimitStore
from llmproxy.ratelimit.store import Adjust, Outcome, Take
from tests.harness.waiting import eventually

TIMEOUT_S = 0.01
TAKE = Take("tenant=a", "sliding_log", 5, 60_000, 1)


class HeldStore(MemoryLimitStore):
    """Redis as the test holds it: each call is decided at once but answered on `release`."""

    def __init__(self, allowed: bool = True) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.allowed = allowed
        self.adjusted: list[Adjust] = []
        self.failing = False

    async def take(self, ops: Sequence[Take]) -> list[Outcome]:
        await self.release.wait()
        if self.failing:
            raise StoreError("redis: connection lost")
        return [Outcome(self.allowed, 5, 0, 60_000, 1_000) for _ in ops]

    async def adjust(self, ops: Sequence[Adjust]) -> int:
        await self.release.wait()
        self.adjusted.extend(ops)
        return len(ops)

    async def ping(self) -> None:
        raise StoreError("redis: still down")  # the test decides when it is back


def store_over(primary: HeldStore) -> FallbackLimitStore:
    return FallbackLimitStore(primary, MemoryLimitStore(), timeout_s=TIMEOUT_S, probe_interval_s=60)


async def test_an_answer_many_timeouts_late_is_still_redis_s(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Never degrading here: only the answer's lateness is under test.
    monkeypatch.setattr(fallback, "TIMEOUTS_TO_DEGRADE", 1_000)
    primary = HeldStore(allowed=False)  # Redis refuses; the empty local store would admit
    store = store_over(primary)
    try:
        waiting = asyncio.create_task(store.take([TAKE]))
        await asyncio.sleep(10 * TIMEOUT_S)  # ten timeouts pass unanswered
        assert not waiting.done()
        primary.release.set()
        [outcome] = await waiting
        assert not outcome.allowed
        assert not store.degraded
    finally:
        await store.aclose()


async def test_three_timeouts_degrade_and_the_late_answer_is_given_back() -> None:
    primary = HeldStore(allowed=True)
    store = store_over(primary)
    try:
        [outcome] = await store.take([TAKE])  # Redis holds it: decided locally once degraded
        assert outcome.allowed
        assert store.degraded
        primary.release.set()  # Redis answers at last: it counted a hit nobody was told of
        await eventually(lambda: primary.adjusted, what="the late hit given back")
        assert [(a.key, a.delta, a.at_ms) for a in primary.adjusted] == [("tenant=a", -1, 1_000)]
    finally:
        await store.aclose()


async def test_a_caller_that_gives_up_leaves_nothing_counted() -> None:
    primary = HeldStore(allowed=True)
    store = store_over(primary)
    try:
        waiting = asyncio.create_task(store.take([TAKE]))
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        primary.release.set()
        await eventually(lambda: primary.adjusted, what="the abandoned hit given back")
        assert [a.delta for a in primary.adjusted] == [-1]
    finally:
        await store.aclose()


async def test_a_late_failure_or_refusal_has_nothing_to_give_back() -> None:
    for primary in (HeldStore(allowed=False), HeldStore(allowed=True)):
        primary.failing = primary.allowed  # the allowed one fails instead of answering
        store = store_over(primary)
        try:
            await store.take([TAKE])
            assert store.degraded
            primary.release.set()
            await asyncio.sleep(TIMEOUT_S)
            assert primary.adjusted == []
        finally:
            await store.aclose()


async def test_a_correction_out_when_the_instance_degrades_is_still_applied() -> None:
    primary = HeldStore()
    store = store_over(primary)
    adjustment = Adjust("tenant=a", "sliding_log", 60_000, 3, 1_000)
    try:
        assert await store.adjust([adjustment]) == 0  # locally: nothing counted there
        assert store.degraded
        primary.release.set()
        await eventually(lambda: primary.adjusted, what="the correction applied on Redis")
        assert primary.adjusted == [adjustment]
    finally:
        await store.aclose()
