"""Cache pressure evicts cache entries only: the cache has a Redis of its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmproxy.authz.records import KeyRecord
from llmproxy.authz.store import RedisKeyStore
from llmproxy.common.errors import ConfigError
from llmproxy.common.redis import connect_redis
from llmproxy.common.settings import RedisSettings
from llmproxy.common.usage import Identity, RedisUsageStore, Usage
from llmproxy.config import DEFAULT_CONFIG, load_config
from llmproxy.router.cache.store import CachedAnswer, RedisResponseCache
from llmproxy.router.server import refuse_shared_server
from tests.harness.redis_server import own_redis
from tests.integration.router.conftest import StartRouter

ENTRY = b"x" * 64 * 1024  # 200 answers of 64 KiB: more than three times the cache's maxmemory
CACHED = {"model": "gpt", "messages": [{"role": "user", "content": "Hi"}], "temperature": 0}


def key_record(index: int) -> KeyRecord:
    return KeyRecord(
        key_id=f"{index:016x}",
        key_hash="ab" * 32,
        tenant="acme",
        user="u",
        created_at=1.0,
        updated_at=1.0,
    )


async def test_filling_the_cache_past_maxmemory_leaves_keys_and_usage_alone(
    start_router: StartRouter, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    async with (
        own_redis(tmp_path, request) as (main_url, _),
        own_redis(tmp_path, request, "redis-cache") as (cache_url, _),
    ):
        main = connect_redis(RedisSettings(url=main_url))
        cache_client = connect_redis(RedisSettings(url=cache_url))
        try:
            store, usage = RedisKeyStore(main), RedisUsageStore(main)
            records = [key_record(i) for i in range(200)]
            for record in records:
                await store.create(record)
            who = Identity(tenant="acme", user="u", key_id=records[0].key_id)
            await usage.record(who, "gpt", Usage(10, 5, 0.25))
            settings = {
                "redis_url": cache_url,
                "maxmemory_policy": "allkeys-lru",
                "maxmemory": "4mb",
            }
            router = await start_router(main_url, cache=settings)
            # The router configured its cache's Redis, and only that one.
            assert (await cache_client.config_get("maxmemory"))["maxmemory"] == str(4 * 2**20)
            assert (await main.config_get("maxmemory-policy"))["maxmemory-policy"] == "noeviction"
            filler = RedisResponseCache(cache_client, backoff_s=1)
            for i in range(200):
                answer = CachedAnswer("application/json", ENTRY, "gpt", tenant="acme")
                await filler.put(f"{i:064x}", answer, ttl_s=3600, tags=())
            assert (await cache_client.info("stats"))["evicted_keys"] > 0
            # The cache keeps working: a new answer is stored and hits.
            assert (await router.chat(CACHED))[0]["x-cache"] == "MISS"
            assert (await router.chat(CACHED))[0]["x-cache"] == "HIT"
            assert await filler.get(f"{199:064x}") is not None  # the newest entries stay
            assert [await store.get(r.key_id) for r in records] == records
            assert await usage.spend_usd("key", who.key_id, "day") == 0.25
            assert await main.keys("llmproxy:cache:*") == []  # no cache entry in the stack's Redis
        finally:
            await main.aclose()
            await cache_client.aclose()


@pytest.mark.parametrize(
    ("field", "value"), [("maxmemory_policy", "volatile-lru"), ("maxmemory", "256mb")]
)
def test_eviction_settings_on_the_stacks_redis_are_refused(field: str, value: str) -> None:
    environ = {
        "LLMPROXY__SERVICES__ROUTER__CACHE__REDIS_URL": "null",
        "LLMPROXY__SERVICES__ROUTER__CACHE__MAXMEMORY_POLICY": "null",
        "LLMPROXY__SERVICES__ROUTER__CACHE__MAXMEMORY": "null",
        f"LLMPROXY__SERVICES__ROUTER__CACHE__{field.upper()}": value,
    }
    with pytest.raises(ConfigError, match=rf"services\.router\.cache\.{field}: {value} would"):
        load_config(DEFAULT_CONFIG, environ)


@pytest.mark.parametrize(
    "cache_url",
    ["redis://localhost:6379/0", "redis://127.0.0.1:6379/1", "redis://127.0.0.1:6379"],
)
def test_another_spelling_of_the_stacks_redis_is_refused(cache_url: str) -> None:
    environ = {
        "LLMPROXY__REDIS__URL": "redis://127.0.0.1:6379/0",
        "LLMPROXY__SERVICES__ROUTER__CACHE__REDIS_URL": cache_url,
        "LLMPROXY__SERVICES__ROUTER__CACHE__MAXMEMORY_POLICY": "allkeys-lru",
    }
    with pytest.raises(ConfigError, match=r"services\.router\.cache\.maxmemory_policy"):
        load_config(DEFAULT_CONFIG, environ)


async def test_a_cache_url_reaching_the_stacks_server_is_refused_at_startup(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # One server under two URLs (here another database; in life a DNS alias or a proxy):
    # only the servers' run ids show it.
    async with (
        own_redis(tmp_path, request) as (main_url, _),
        own_redis(tmp_path, request, "redis-cache") as (other_url, _),
    ):
        main = connect_redis(RedisSettings(url=main_url))
        alias = connect_redis(RedisSettings(url=main_url.replace("/0", "/3")))
        other = connect_redis(RedisSettings(url=other_url))
        try:
            with pytest.raises(ConfigError, match=r"cache\.redis_url: reaches the same Redis"):
                await refuse_shared_server(main, alias)
            await refuse_shared_server(main, other)  # two servers: accepted
        finally:
            for client in (main, alias, other):
                await client.aclose()
