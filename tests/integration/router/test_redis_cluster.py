"""The router's cache and usage accounting on a real 3-master Redis Cluster."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from redis.asyncio import RedisCluster

from llmproxy._gen.router.v1 import router_pb2
from llmproxy.common.usage import RedisUsageStore
from tests.harness.redis_cluster import RedisClusterNodes, redis_cluster
from tests.harness.waiting import eventually
from tests.integration.router.conftest import StartRouter


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterNodes]:
    with redis_cluster(tmp_path_factory.mktemp("router-cluster")) as nodes:
        yield nodes


async def test_cache_invalidation_stats_and_usage_on_a_cluster(
    start_router: StartRouter, cluster: RedisClusterNodes
) -> None:
    router = await start_router(cluster.url, cluster=True)
    bodies = [
        {
            "model": model,
            "temperature": 0,
            "messages": [{"role": "user", "content": f"cluster {n}"}],
        }
        for model in ("gpt", "claude")
        for n in range(6)
    ]
    for body in bodies:
        assert (await router.chat(body, {"x-llmproxy-cache-tags": "c"}))[0]["x-cache"] == "MISS"
    for body in bodies:
        assert (await router.chat(body))[0]["x-cache"] == "HIT"
    client = RedisCluster.from_url(cluster.url)
    try:
        entries = [k async for k in client.scan_iter(match="llmproxy:cache:{*")]
        assert len(entries) == 12
        slots = {client.keyslot(k) for k in entries}
        assert len({client.get_node_from_key(k).name for k in entries}) > 1, slots  # spread out
        stats = await router.control.GetCacheStats(router_pb2.GetCacheStatsRequest())
        assert {m.model: (m.hits, m.misses) for m in stats.models} == {
            "gpt": (6, 6),
            "claude": (6, 6),
        }
        removed = await router.control.InvalidateCache(
            router_pb2.InvalidateCacheRequest(models=["claude"])
        )
        assert removed.removed == 6
        removed = await router.control.InvalidateCache(router_pb2.InvalidateCacheRequest(all=True))
        assert removed.removed == 6
        assert [k async for k in client.scan_iter(match="llmproxy:cache:{*")] == []
        await router.chat(
            {"model": "gpt", "messages": [{"role": "user", "content": "$"}]},
            {"x-llmproxy-key-id": "kc"},
        )
        store = RedisUsageStore(client)
        await eventually(
            lambda: store.spend_usd("key", "kc", "day"), lambda v: v > 0, what="spend recorded"
        )
    finally:
        await client.aclose()
