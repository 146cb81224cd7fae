"""Limits hold under concurrency on real Redis: standalone and a 3-master cluster."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from llmproxy.common.contract import (
    KEY_ID_HEADER,
    MODEL_HEADER,
    RESERVED_AT_HEADER,
    TENANT_HEADER,
    TOKEN_ESTIMATE_HEADER,
)
from llmproxy.common.ratelimit_client import reconcile_tokens
from tests.harness.redis_cluster import RedisClusterNodes
from tests.integration.ratelimit.conftest import (
    OK,
    OVER_LIMIT,
    TPM_LIMITS,
    Instance,
    StartRatelimit,
    descriptor,
    request,
    until_redis_time,
)

LOG_LIMIT = """
domain: llmproxy
descriptors:
  - key: tenant
    descriptors:
      - key: key_id
        rate_limit: {unit: minute, requests_per_unit: 100, algorithm: sliding_log}
"""


async def admitted_of_500(first: Instance, second: Instance) -> int:
    one_key = request(descriptor(("tenant", "acme"), ("key_id", "k1")))
    replies = await asyncio.gather(
        *((first if i % 2 else second).rls.ShouldRateLimit(one_key) for i in range(500))
    )
    assert {r.overall_code for r in replies} == {OK, OVER_LIMIT}
    return sum(r.overall_code == OK for r in replies)


async def test_500_concurrent_requests_on_two_instances_admit_exactly_100(
    start_ratelimit: StartRatelimit, limits_file: Callable[[str], Path]
) -> None:
    path = limits_file(LOG_LIMIT)
    first, second = await start_ratelimit(path), await start_ratelimit(path)
    assert await admitted_of_500(first, second) == 100


async def test_the_same_on_a_redis_cluster(
    start_ratelimit: StartRatelimit,
    limits_file: Callable[[str], Path],
    cluster: RedisClusterNodes,
    cluster_client: aioredis.RedisCluster,
) -> None:
    path = limits_file(LOG_LIMIT)
    first = await start_ratelimit(path, cluster.url, cluster=True)
    second = await start_ratelimit(path, cluster.url, cluster=True)
    assert await admitted_of_500(first, second) == 100
    # The log's two keys share a hash tag, hence a slot: the script never crossed slots.
    keys = [k async for k in cluster_client.scan_iter(match="llmproxy:rl:*")]
    assert len(keys) == 2
    assert len({cluster_client.keyslot(k) for k in keys}) == 1


async def reserve_call_reconcile(
    instance: Instance, tenant: str, rng: random.Random, most_over_estimate: int = 100
) -> tuple[bool, int, int]:
    """One request's life: reserve its estimate, call (if admitted), reconcile actual usage.

    The actual usage is usually below the estimate, and up to most_over_estimate above it.
    """
    await asyncio.sleep(rng.uniform(0, 0.3))  # arrivals spread over 300 ms
    estimate = rng.randint(200, 600)
    actual = rng.randint(50, estimate + most_over_estimate)
    reply = await instance.rls.ShouldRateLimit(
        request(descriptor(("tokens", "estimate"), ("tenant", tenant), hits=estimate))
    )
    if reply.overall_code != OK:
        return False, estimate, 0
    headers = {
        TENANT_HEADER: tenant,
        KEY_ID_HEADER: "k1",
        MODEL_HEADER: "m",
        TOKEN_ESTIMATE_HEADER: str(estimate),
        **{h.key: h.value for h in reply.request_headers_to_add},
    }
    assert RESERVED_AT_HEADER in headers
    await asyncio.sleep(rng.uniform(0.01, 0.1))  # the provider call
    adjusted = await reconcile_tokens(instance.internal, headers, actual)
    assert adjusted == (1 if actual != estimate else 0)
    return True, estimate, actual


@pytest.mark.parametrize("most_over_estimate", [0, 100], ids=["estimates-hold", "some-exceed"])
@pytest.mark.parametrize("algorithm", ["sliding_log", "sliding_counter"])
async def test_100_concurrent_requests_never_exceed_10000_tokens_per_minute(
    start_ratelimit: StartRatelimit,
    limits_file: Callable[[str], Path],
    redis_client: aioredis.Redis,
    algorithm: str,
    most_over_estimate: int,
) -> None:
    instance = await start_ratelimit(limits_file(TPM_LIMITS.replace("ALGORITHM", algorithm)))
    if algorithm == "sliding_counter":
        # The counter guarantees the limit per aligned minute (README): keep the whole run
        # inside one, rather than let a minute boundary decide the test.
        await until_redis_time(
            redis_client, lambda now: now % 60_000 < 40_000, "20 s or more left in the minute"
        )
    rng = random.Random(4)
    results = await asyncio.gather(
        *(reserve_call_reconcile(instance, "acme", rng, most_over_estimate) for _ in range(100))
    )
    admitted = [(estimate, actual) for ok, estimate, actual in results if ok]
    assert 0 < len(admitted) < 100  # the limit was binding
    used = sum(actual for _, actual in admitted)
    # Admission is exact on reservations, so only what admitted requests used beyond their
    # estimate can pass the limit (several of those in flight together add up); when every
    # estimate holds (prompt + max_tokens), the limit holds exactly.
    beyond_estimates = sum(max(actual - estimate, 0) for estimate, actual in admitted)
    assert used <= 10_000 + beyond_estimates
    # After reconciliation the counter holds exactly the actual usage.
    from llmproxy._gen.ratelimit.v1 import ratelimit_pb2  # noqa: PLC0415

    usage = await instance.control.GetUsage(
        ratelimit_pb2.GetUsageRequest(
            descriptor=ratelimit_pb2.Descriptor(
                entries=[
                    ratelimit_pb2.DescriptorEntry(key="tokens", value="estimate"),
                    ratelimit_pb2.DescriptorEntry(key="tenant", value="acme"),
                ]
            )
        )
    )
    assert usage.used == used


async def test_token_reservations_on_a_redis_cluster(
    start_ratelimit: StartRatelimit,
    limits_file: Callable[[str], Path],
    cluster: RedisClusterNodes,
    cluster_client: aioredis.RedisCluster,
) -> None:
    path = limits_file(TPM_LIMITS.replace("ALGORITHM", "sliding_log"))
    instance = await start_ratelimit(path, cluster.url, cluster=True)
    rng = random.Random(7)
    results = await asyncio.gather(
        *(reserve_call_reconcile(instance, f"t{i % 3}", rng) for i in range(60))
    )
    for tenant in range(3):
        used = sum(
            a for (ok, _, a), i in zip(results, range(60), strict=True) if ok and i % 3 == tenant
        )
        assert 0 < used <= 10_000 + 100
