"""The live instance count: read from the registry, kept while Redis does not answer."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import fakeredis
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from llmproxy.common.chaos.registry import TTL_S, Instance, InstanceRegistry
from llmproxy.common.live_count import LiveCount
from tests.harness.waiting import eventually


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def redis() -> AsyncIterator[fakeredis.FakeAsyncRedis]:
    client = fakeredis.FakeAsyncRedis()
    yield client
    await client.aclose()


def limiter(number: int) -> Instance:
    return Instance("ratelimit", f"ratelimit-{number}", f"10.0.0.{number}:50052", number)


async def test_the_count_follows_the_registry_and_is_kept_while_redis_is_down(
    redis: fakeredis.FakeAsyncRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    registry = InstanceRegistry(redis, clock)
    count = LiveCount(registry, "ratelimit", initial=2)
    assert count() == 2  # the configured number until the first read
    assert not await count.refresh()  # nobody registered yet: not news
    assert count() == 2
    for number in (1, 2, 3):
        await registry.register(limiter(number))
    await registry.register(Instance("router", "router-1", "10.0.0.9:50051", 9))
    assert await count.refresh()
    assert count() == 3
    clock.now += TTL_S + 1  # two stopped renewing
    await registry.register(limiter(1))
    assert await count.refresh()
    assert count() == 1

    await registry.register(limiter(2))
    await registry.register(limiter(3))

    async def down(*args: object, **kwargs: object) -> None:
        raise RedisConnectionError("Connection refused")

    monkeypatch.setattr(redis, "zcount", down)
    assert not await count.refresh()
    assert count() == 1  # the last count read, not the configured one
    monkeypatch.undo()
    assert await count.refresh()
    assert count() == 3


async def test_run_refreshes_until_cancelled(redis: fakeredis.FakeAsyncRedis) -> None:
    registry = InstanceRegistry(redis)
    count = LiveCount(registry, "ratelimit", initial=1, refresh_s=0.01)
    for number in (1, 2):
        await registry.register(limiter(number))
    task = asyncio.create_task(count.run())
    try:
        await eventually(count, lambda found: found == 2, timeout_s=5)
        await registry.register(limiter(3))
        await eventually(count, lambda found: found == 3, timeout_s=5)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
