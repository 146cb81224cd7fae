"""Buffered usage: totals add up in memory and reach the store in one write per flush."""

from __future__ import annotations

import pytest
from fakeredis import FakeAsyncRedis

from llmproxy.common.usage import BufferedUsageStore, Identity, RedisUsageStore, Usage

ANN = Identity("acme", "ann", "k1")


class FailingStore(RedisUsageStore):
    def __init__(self) -> None:
        super().__init__(FakeAsyncRedis())
        self.fail = True

    async def add(self, totals: dict[tuple[str, str], tuple[int, Usage]]) -> None:
        if self.fail:
            raise ConnectionError("redis down")
        await super().add(totals)


async def test_totals_are_pending_until_flushed_and_then_written() -> None:
    store = RedisUsageStore(FakeAsyncRedis())
    buffered = BufferedUsageStore(store)
    await buffered.record(ANN, "m", Usage(10, 5, 0.5))
    await buffered.record(Identity("acme", "bob", "k2"), "m", Usage(1, 1, 0.25))
    assert await store.spend_usd("tenant", "acme", "day") == 0.0
    assert await buffered.spend_usd("tenant", "acme", "day") == pytest.approx(0.75)
    await buffered.flush()
    assert await store.spend_usd("tenant", "acme", "day") == pytest.approx(0.75)
    assert await store.spend_usd("key", "k1", "month") == pytest.approx(0.5)
    assert await buffered.spend_usd("tenant", "acme", "day") == pytest.approx(0.75)


async def test_a_failed_flush_keeps_the_totals_for_the_next_one() -> None:
    store = FailingStore()
    buffered = BufferedUsageStore(store)
    await buffered.record(ANN, "m", Usage(1, 1, 1.0))
    with pytest.raises(ConnectionError):
        await buffered.flush()
    await buffered.record(ANN, "m", Usage(1, 1, 2.0))
    store.fail = False
    await buffered.flush()
    assert await store.spend_usd("key", "k1", "day") == pytest.approx(3.0)
