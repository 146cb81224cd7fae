"""Heartbeat entries: listed while renewed, swept once expired, gone at once when removed."""

from __future__ import annotations

import asyncio
import random

import fakeredis

from llmproxy.common.heartbeats import HeartbeatEntries, raise_if_cancelled


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_entries_live_while_renewed_and_expire_without() -> None:
    redis = fakeredis.FakeAsyncRedis()
    clock = Clock()
    entries = HeartbeatEntries(redis, "t:svc", values="members", clock=clock)
    assert (entries.alive_key, entries.values_key) == ("{t:svc}:alive", "{t:svc}:members")
    assert await entries.live() == {}
    await entries.put("b", "B", ttl_s=4)
    await entries.put("a", "A", ttl_s=2)
    assert await entries.live() == {"a": "A", "b": "B"}
    assert list(await entries.live()) == ["a", "b"]
    clock.now += 3  # a is not renewed, b is
    await entries.put("b", "B2", ttl_s=4)
    assert await entries.live() == {"b": "B2"}
    assert await redis.hkeys(entries.values_key) == [b"b"]  # a swept, value and all
    await entries.remove("b")
    assert await entries.live() == {}
    assert await redis.exists(entries.alive_key, entries.values_key) == 0
    await redis.aclose()


async def test_a_renewing_loop_ends_when_cancelled_even_inside_a_command() -> None:
    redis = fakeredis.FakeAsyncRedis()
    entries = HeartbeatEntries(redis, "t:svc")

    async def renew() -> None:
        while True:
            await entries.put("a", "A", ttl_s=4)
            raise_if_cancelled()

    timing = random.Random(7)
    for _ in range(50):  # cancelled at many points of a round, some inside redis-py
        task = asyncio.create_task(renew())
        await asyncio.sleep(timing.random() * 0.005)
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=2)
        assert done, "the loop went on after its cancellation"
    await redis.aclose()
