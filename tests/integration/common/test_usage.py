"""Usage accounting on a real Redis."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis

from llmproxy.common.usage import Identity, RedisUsageStore, Usage, usage_key

ALICE = Identity(tenant="acme", user="alice", key_id="k1")


async def test_usage_adds_up_per_key_tenant_and_model(redis_client: aioredis.Redis) -> None:
    store = RedisUsageStore(redis_client)
    await store.record(ALICE, "gpt-4o-mini", Usage(10, 5, 0.25))
    await store.record(Identity("acme", "bob", "k2"), "gpt-4o-mini", Usage(1, 1, 0.5))
    assert await store.spend_usd("key", "k1", "day") == pytest.approx(0.25)
    assert await store.spend_usd("tenant", "acme", "month") == pytest.approx(0.75)
    assert await store.spend_usd("model", "gpt-4o-mini", "day") == pytest.approx(0.75)
    assert await store.spend_usd("key", "nobody", "day") == 0.0
    counters = await redis_client.hgetall(usage_key("key", "k1", "day", datetime.now(UTC)))
    assert counters[b"requests"] == b"1"
    assert counters[b"prompt_tokens"] == b"10"
    assert counters[b"completion_tokens"] == b"5"


async def test_counters_expire(redis_client: aioredis.Redis) -> None:
    await RedisUsageStore(redis_client).record(ALICE, "m", Usage(1, 1, 0.0))
    key = usage_key("tenant", "acme", "day", datetime.now(UTC))
    assert 0 < await redis_client.ttl(key) <= 40 * 86400
