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

TIMEOUT_S = 0.01
TAKE = Take("tenant=a", "sliding_log", 5, 60_000, 1)
ADJUST = Adjust("tenant=a", "sliding_log", 60_000, 3, 1_000)


class HeldStore(MemoryLimitStore):
    """Redis as the test holds it: every call is answered only once `release` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.adjusted: list[Adjust] = []

    async def take(self, ops: Sequence[Take]) -> list[Outcome]:
        await self.release.wait()
        return [Outcome(False, 5, 0, 60_000, 1_000) for _ in ops]  # refused: used up

    async def adjust(self, ops: Sequence[Adjust]) -> int:
        await self.release.wait()
        self.adjusted.extend(ops)
        return len(ops)

    async def ping(self) -> None:
        raise StoreError("redis: still down")  # the test decides when it is back


@pytest.fixture
def primary() -> HeldStore:
    return HeldStore()


def over(primary: HeldStore) -> FallbackLimitStore:
    return FallbackLimitStore(primary, MemoryLimitStore(), timeout_s=TIMEOUT_S, probe_interval_s=60)


@pytest.fixture
def store(primary: HeldStore) -> FallbackLimitStore:
    return over(primary)


async def release_after(primary: HeldStore, timeouts: int) -> None:
    await asyncio.sleep(timeouts * TIMEOUT_S)
    primary.release.set()


async def test_an_answer_many_timeouts_late_is_still_redis_s(
    primary: HeldStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Never degrading here: only the answer's lateness is under test.
    monkeypatch.setattr(fallback, "TIMEOUTS_TO_DEGRADE", 1_000)
    store = over(primary)
    try:
        releasing = asyncio.create_task(release_after(primary, 10))
        # Redis refuses; the empty local store would have admitted it.
        [outcome] = await store.take([TAKE])
        await releasing
        assert not outcome.allowed
        assert not store.degraded
        assert await store.adjust([ADJUST]) == 1  # a correction, too, waits for Redis
        assert primary.adjusted == [ADJUST]
    finally:
        await store.aclose()


async def test_three_timeouts_unanswered_degrade_and_decide_locally(
    store: FallbackLimitStore,
) -> None:
    try:
        [outcome] = await store.take([TAKE])  # Redis never answers it
        assert outcome.allowed  # the local store's answer, within its share
        assert store.degraded
    finally:
        await store.aclose()


async def test_a_correction_unanswered_for_three_timeouts_is_applied_locally(
    store: FallbackLimitStore, primary: HeldStore
) -> None:
    try:
        assert await store.adjust([ADJUST]) == 0  # nothing counted locally to correct
        assert store.degraded
        assert primary.adjusted == []
    finally:
        await store.aclose()
