"""ReconcileTokensBatch on real Redis (standalone and a 3-master cluster), bad input included."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
import redis.asyncio as aioredis

from llmproxy._gen.ratelimit.v1 import ratelimit_pb2
from tests.harness.redis_cluster import RedisClusterNodes
from tests.integration.ratelimit.conftest import (
    OK,
    TPM_LIMITS,
    Instance,
    StartRatelimit,
    descriptor,
    request,
)

TENANTS = [f"t{i}" for i in range(8)]  # several cluster slots


def token_descriptor(tenant: str) -> ratelimit_pb2.Descriptor:
    return ratelimit_pb2.Descriptor(
        entries=[
            ratelimit_pb2.DescriptorEntry(key="tokens", value="estimate"),
            ratelimit_pb2.DescriptorEntry(key="tenant", value=tenant),
        ]
    )


def item(tenant: str, reserved: int, actual: int) -> ratelimit_pb2.ReconcileTokensRequest:
    return ratelimit_pb2.ReconcileTokensRequest(
        descriptors=[token_descriptor(tenant)], reserved_tokens=reserved, actual_tokens=actual
    )


async def reserve(instance: Instance, tenant: str, tokens: int) -> None:
    reply = await instance.rls.ShouldRateLimit(
        request(descriptor(("tokens", "estimate"), ("tenant", tenant), hits=tokens))
    )
    assert reply.overall_code == OK


async def used(instance: Instance, tenant: str) -> int:
    reply = await instance.control.GetUsage(
        ratelimit_pb2.GetUsageRequest(descriptor=token_descriptor(tenant))
    )
    return int(reply.used)


async def check_batch(instance: Instance) -> None:
    for tenant in TENANTS:
        await reserve(instance, tenant, 1000)
    batch = [item(tenant, 1000, 100 * n) for n, tenant in enumerate(TENANTS)]
    batch.append(item("t1", 0, 0))  # nothing to correct: counted as not applied
    batch.append(
        ratelimit_pb2.ReconcileTokensRequest(  # no limit matches: skipped, like the single RPC
            descriptors=[
                ratelimit_pb2.Descriptor(entries=[ratelimit_pb2.DescriptorEntry(key="x")])
            ],
            reserved_tokens=5,
        )
    )
    reply = await instance.internal.ReconcileTokensBatch(
        ratelimit_pb2.ReconcileTokensBatchRequest(items=batch)
    )
    assert (reply.adjusted, reply.applied_items) == (len(TENANTS), len(TENANTS))
    assert [await used(instance, t) for t in TENANTS] == [100 * n for n in range(len(TENANTS))]


@pytest.mark.parametrize("algorithm", ["sliding_log", "sliding_counter"])
async def test_a_batch_corrects_every_item_on_standalone_redis(
    start_ratelimit: StartRatelimit,
    limits_file: Callable[[str], Path],
    redis_client: aioredis.Redis,
    algorithm: str,
) -> None:
    instance = await start_ratelimit(limits_file(TPM_LIMITS.replace("ALGORITHM", algorithm)))
    await check_batch(instance)


async def test_a_batch_corrects_every_item_on_a_redis_cluster(
    start_ratelimit: StartRatelimit,
    limits_file: Callable[[str], Path],
    cluster: RedisClusterNodes,
    cluster_client: aioredis.RedisCluster,
) -> None:
    path = limits_file(TPM_LIMITS.replace("ALGORITHM", "sliding_log"))
    instance = await start_ratelimit(path, cluster.url, cluster=True)
    await check_batch(instance)
    keys = [k async for k in cluster_client.scan_iter(match="llmproxy:rl:*")]
    assert len({cluster_client.keyslot(k) for k in keys}) > 1  # the batch crossed slots


async def test_an_empty_batch_corrects_nothing(
    start_ratelimit: StartRatelimit,
    limits_file: Callable[[str], Path],
    redis_client: aioredis.Redis,
) -> None:
    instance = await start_ratelimit(limits_file(TPM_LIMITS.replace("ALGORITHM", "sliding_log")))
    reply = await instance.internal.ReconcileTokensBatch(
        ratelimit_pb2.ReconcileTokensBatchRequest()
    )
    assert (reply.adjusted, reply.applied_items) == (0, 0)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (ratelimit_pb2.ReconcileTokensRequest(reserved_tokens=10), "items[1]: no descriptors"),
        (
            ratelimit_pb2.ReconcileTokensRequest(
                descriptors=[
                    ratelimit_pb2.Descriptor(entries=[ratelimit_pb2.DescriptorEntry(value="v")])
                ],
                reserved_tokens=10,
            ),
            "items[1]: every descriptor entry needs a key",
        ),
        (
            ratelimit_pb2.ReconcileTokensRequest(
                descriptors=[ratelimit_pb2.Descriptor()], reserved_tokens=10
            ),
            "items[1]: a descriptor needs at least one entry",
        ),
    ],
    ids=["no-descriptors", "empty-key", "no-entries"],
)
async def test_an_invalid_item_refuses_the_whole_batch(
    start_ratelimit: StartRatelimit,
    limits_file: Callable[[str], Path],
    redis_client: aioredis.Redis,
    bad: ratelimit_pb2.ReconcileTokensRequest,
    message: str,
) -> None:
    instance = await start_ratelimit(limits_file(TPM_LIMITS.replace("ALGORITHM", "sliding_log")))
    await reserve(instance, "t0", 1000)
    batch = [item("t0", 1000, 10), bad, item("t0", 1000, 10)]
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await instance.internal.ReconcileTokensBatch(
            ratelimit_pb2.ReconcileTokensBatchRequest(items=batch)
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in str(refused.value.details())
    assert await used(instance, "t0") == 1000  # the valid items were not applied either
