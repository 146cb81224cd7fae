"""take.lua's sliding counters on a real Redis: their hashes expire, but never too early."""

from __future__ import annotations

import math

import redis.asyncio as aioredis

from llmproxy.ratelimit.redis_store import RedisLimitStore
from llmproxy.ratelimit.rules import COUNTER
from llmproxy.ratelimit.store import Take
from tests.harness.waiting import eventually
from tests.integration.ratelimit.conftest import redis_now_ms, until_redis_time

KEY = "llmproxy:rl:test:{counter}"


def take(limit: int, window_ms: int, hits: int = 1) -> list[Take]:
    return [Take(KEY, COUNTER, limit, window_ms, hits)]


async def test_a_counter_hash_expires_after_two_windows(
    store: RedisLimitStore, redis_client: aioredis.Redis
) -> None:
    window_ms = 300
    for _ in range(3):
        assert (await store.take(take(100, window_ms)))[0].allowed
    ttl = await redis_client.pttl(KEY)
    assert 0 < ttl <= 2 * window_ms  # never a key without expiry
    await eventually(
        lambda: redis_client.exists(KEY), lambda found: found == 0, what="expired", timeout_s=5
    )


async def test_the_previous_window_still_counts_when_the_next_begins(
    store: RedisLimitStore, redis_client: aioredis.Redis
) -> None:
    # The TTL is set when a window's first hit creates its field and not moved by later hits:
    # the hash must still hold that window while it serves as the previous one.
    window_ms = 2000
    # From the start of a window, so that the 11 hits below surely share one.
    current = await redis_now_ms(redis_client) // window_ms
    await until_redis_time(redis_client, lambda now: now // window_ms > current, "a new window")
    outcomes = [(await store.take(take(10, window_ms)))[0] for _ in range(11)]
    assert [o.allowed for o in outcomes] == [True] * 10 + [False]
    index = outcomes[-1].now_ms // window_ms
    await until_redis_time(redis_client, lambda now: now // window_ms > index, "the next window")
    outcome = (await store.take(take(10, window_ms)))[0]
    assert outcome.now_ms // window_ms == index + 1  # the next window
    elapsed = outcome.now_ms - (index + 1) * window_ms
    weighed = 10 * (window_ms - elapsed) / window_ms  # what is left of the previous 10 hits
    fits = weighed + 1 <= 10
    assert outcome.allowed == fits
    assert outcome.used == math.ceil(weighed + (1 if fits else 0))
    assert 0 < await redis_client.pttl(KEY) <= 2 * window_ms
