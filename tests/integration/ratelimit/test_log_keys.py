"""take.lua's sliding logs on a real Redis: members leave the window and the sum with them."""

from __future__ import annotations

import redis.asyncio as aioredis

from llmproxy.ratelimit.redis_store import RedisLimitStore
from llmproxy.ratelimit.rules import LOG
from llmproxy.ratelimit.store import Outcome, Take
from tests.integration.ratelimit.conftest import until_redis_time

KEY = "llmproxy:rl:test:{log}"
SUM = KEY + ":sum"
# Long enough that a hit made half a window later is surely still in it when the test looks,
# even on a busy machine; the waits follow the server's clock, which the script reads.
WINDOW_MS = 2000


async def take(store: RedisLimitStore, limit: int, hits: int = 1) -> Outcome:
    (outcome,) = await store.take([Take(KEY, LOG, limit, WINDOW_MS, hits)])
    return outcome


async def until_gone(client: aioredis.Redis, hit: Outcome) -> None:
    """Wait until hit (at the server's time hit.now_ms) has left the window by Redis's clock."""
    await until_redis_time(client, lambda now: now > hit.now_ms + WINDOW_MS, "the hit gone")


async def until_later(client: aioredis.Redis, hit: Outcome) -> None:
    """Wait until half a window has passed since hit, by Redis's clock."""
    await until_redis_time(client, lambda now: now >= hit.now_ms + WINDOW_MS / 2, "half a window")


async def test_hits_leave_the_window_and_the_sum(
    store: RedisLimitStore, redis_client: aioredis.Redis
) -> None:
    first = await take(store, 3)
    await until_later(redis_client, first)
    later = [await take(store, 3) for _ in range(3)]
    assert [o.allowed for o in later] == [True, True, False]
    assert [o.used for o in later] == [2, 3, 3]
    # Refused until the first hit leaves, within half a window.
    assert 0 < later[-1].reset_ms <= WINDOW_MS / 2
    assert 0 < await redis_client.pttl(SUM) <= WINDOW_MS
    await until_gone(redis_client, first)
    again = await take(store, 3)
    assert again.allowed
    assert again.used == 3  # the first hit was subtracted when it left: 2 + 1
    assert await redis_client.zcard(KEY) == 3
    assert await redis_client.get(SUM) == b"3"


async def test_a_refusal_keeps_the_sum_true_and_its_expiry(
    store: RedisLimitStore, redis_client: aioredis.Redis
) -> None:
    # Weighted hits: 2 and 2 fit a limit of 5, then 2 more do not.
    first = await take(store, 5, hits=2)
    assert first.allowed
    await until_later(redis_client, first)
    second = await take(store, 5, hits=2)
    assert second.allowed
    assert second.used == 4
    refused = await take(store, 5, hits=2)
    assert not refused.allowed
    # Only the first hit must leave for 2 more to fit: within half a window.
    assert 0 < refused.reset_ms <= WINDOW_MS / 2
    await until_gone(redis_client, first)
    # The first hit has left: 2 in the window, and 4 more still do not fit.
    big = await take(store, 5, hits=4)
    assert not big.allowed
    assert big.used == 2
    # That refusal wrote the smaller sum back without touching its expiry.
    assert await redis_client.get(SUM) == b"2"
    assert 0 < await redis_client.pttl(SUM) <= WINDOW_MS
    assert await redis_client.zcard(KEY) == 1


async def test_a_look_without_hits_counts_nothing(
    store: RedisLimitStore, redis_client: aioredis.Redis
) -> None:
    assert (await take(store, 2)).used == 1
    look = await take(store, 2, hits=0)
    assert look.allowed
    assert look.used == 1
    assert await redis_client.zcard(KEY) == 1
