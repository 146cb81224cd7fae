"""A Sentinel failover is no outage: steady traffic through Envoy with a known key gets no 5xx
while the primary redis-server is killed and a replica promoted, and every service follows the
promoted replica. Its own stack (a primary, a replica and three sentinels), since the test kills
the primary."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

import grpc
import httpx
import pytest
import redis.asyncio as aioredis

from llmproxy._gen.authz.v1 import authz_pb2, authz_pb2_grpc
from llmproxy._gen.ratelimit.v1 import ratelimit_pb2, ratelimit_pb2_grpc
from llmproxy.authz.store import INVALIDATION_CHANNEL
from llmproxy.common.contract import SERVICES, component_health_name
from llmproxy.common.net import free_port_block
from llmproxy.common.settings import parse_sentinel_url
from llmproxy.devstack.probes import grpc_serving
from llmproxy.devstack.redis_sentinel import data_ports
from llmproxy.devstack.stack import Stack
from tests.harness.configs import stack_config_data
from tests.harness.control import admin_token
from tests.harness.waiting import eventually

PRIMARY_NAME = "llmproxy"
RATE_PER_S = 10
PHASES = ("before", "failover", "after")
# From the kill: the sentinels see the primary down after a second, agree and promote.
FAILOVER_DEADLINE_S = 30.0
# From the promotion: every service writes to, counts in and subscribes on the new primary.
BACK_WITHIN_S = 10.0
TENANT = "failover"


@pytest.fixture
def own_stack_data() -> dict[str, Any]:
    """The shipped configuration on a Sentinel topology the stack starts itself."""
    # Three sentinels on free ports, the two data nodes on the two ports after the last one.
    base = free_port_block(5)
    sentinels = ",".join(f"127.0.0.1:{port}" for port in range(base, base + 3))
    url = f"redis+sentinel://{sentinels}/{PRIMARY_NAME}/0"
    return stack_config_data(redis={"url": url, "topology": "sentinel", "managed": True})


class Traffic:
    """Chat completions at RATE_PER_S with one key, each counted under the phase it was sent in."""

    def __init__(self, client: httpx.AsyncClient, url: str, secret: str) -> None:
        self._client = client
        self._url = url
        self._headers = {"authorization": f"Bearer {secret}"}
        self.phase = PHASES[0]
        self.statuses: dict[str, Counter[int]] = {phase: Counter() for phase in PHASES}
        self._requests: list[asyncio.Task[None]] = []

    def answered(self, phase: str) -> int:
        """How many requests sent in phase have been answered."""
        return sum(self.statuses[phase].values())

    async def run(self) -> None:
        """Send until cancelled, a new prompt each time (every request misses the cache)."""
        index = 0
        while True:
            self._requests.append(asyncio.create_task(self._one(index)))
            index += 1
            await asyncio.sleep(1 / RATE_PER_S)  # the traffic's pace, not a wait for anything

    async def _one(self, index: int) -> None:
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"hi {index}"}]}
        phase = self.phase
        response = await self._client.post(self._url, json=body, headers=self._headers)
        self.statuses[phase][response.status_code] += 1

    async def drain(self) -> None:
        """Wait for every request sent to be answered."""
        await asyncio.gather(*self._requests)


class Control:
    """Admin calls through Envoy's control listener, as an operator makes them."""

    def __init__(self, stack: Stack, channel: grpc.aio.Channel) -> None:
        self._metadata = (("authorization", f"Bearer {admin_token(stack)}"),)
        self._authz = authz_pb2_grpc.AuthzServiceStub(channel)
        self._ratelimit = ratelimit_pb2_grpc.RateLimitControlServiceStub(channel)

    async def create_key(self) -> authz_pb2.CreateKeyResponse:
        """A new key of TENANT: a write to the primary through the authz service."""
        request = authz_pb2.CreateKeyRequest(tenant=TENANT, user="pytest", name="failover")
        reply: authz_pb2.CreateKeyResponse = await self._authz.CreateKey(
            request, metadata=self._metadata, timeout=5
        )
        return reply

    async def degraded(self) -> bool:
        """Whether the rate limiter decides with its local limiter (Redis unreachable)."""
        reply = await self._ratelimit.GetLimits(
            ratelimit_pb2.GetLimitsRequest(), metadata=self._metadata, timeout=5
        )
        return bool(reply.degraded)

    async def tenant_usage(self) -> int:
        """TENANT's request count in its window, as the rate limiter reads it from Redis."""
        entry = ratelimit_pb2.DescriptorEntry(key="tenant", value=TENANT)
        request = ratelimit_pb2.GetUsageRequest(
            descriptor=ratelimit_pb2.Descriptor(entries=[entry])
        )
        reply = await self._ratelimit.GetUsage(request, metadata=self._metadata, timeout=5)
        return int(reply.used)


async def names_primary(stack: Stack, port: int) -> bool:
    """Whether every sentinel names the node on port as the primary."""
    for _, sentinel_port in parse_sentinel_url(stack.config.redis.url).sentinels:
        client = aioredis.Redis(port=sentinel_port, socket_timeout=1)
        try:
            address = await client.sentinel_get_master_addr_by_name(PRIMARY_NAME)
        finally:
            await client.aclose()
        if not address or int(address[1]) != port:
            return False
    return True


async def subscribers(client: aioredis.Redis) -> dict[str, int]:
    """The services' pub/sub channels on a node and how many connections follow each."""
    channels = [_text(c) for c in await client.pubsub_channels()]
    counts = await client.pubsub_numsub(*channels) if channels else []
    # The sentinels talk to each other on their own channel, on every node: not a service's.
    return {_text(c): int(n) for c, n in counts if not _text(c).startswith("__sentinel__")}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def redis_components_serving(stack: Stack) -> list[str]:
    """The service instances whose `redis` component is not SERVING (empty: all are)."""
    down = []
    for name in SERVICES:
        settings = getattr(stack.config.services, name)
        for index in range(settings.instances):
            instance = settings.instance(index)
            target = f"{instance.host}:{instance.grpc_port}"
            if not await grpc_serving(target, component_health_name(name, "redis")):
                down.append(f"{name}-{index}")
    return down


async def test_known_keys_see_no_5xx_while_the_primary_fails_over(own_stack: Stack) -> None:
    primary_port, replica_port = data_ports(parse_sentinel_url(own_stack.config.redis.url))
    envoy = own_stack.config.envoy
    url = f"http://{envoy.host}:{envoy.listener_port}/v1/chat/completions"
    replica = aioredis.Redis(port=replica_port, socket_timeout=5)
    async with (
        grpc.aio.insecure_channel(f"{envoy.host}:{envoy.control_port}") as channel,
        httpx.AsyncClient(timeout=30) as client,
    ):
        control = Control(own_stack, channel)
        known = await control.create_key()
        # The replica has the key's record before its primary dies (as a real replica would
        # have it a moment after any write).
        primary = aioredis.Redis(port=primary_port, socket_timeout=10)
        try:
            assert await primary.execute_command("WAIT", 1, 5000) == 1
            # Every long-lived subscription of every service (authz's invalidations, at least).
            subscribed = await subscribers(primary)
        finally:
            await primary.aclose()
        assert INVALIDATION_CHANNEL in subscribed, subscribed
        traffic = Traffic(client, url, known.secret)
        sending = asyncio.create_task(traffic.run())
        try:
            await eventually(
                lambda: traffic.answered("before") >= 3 * RATE_PER_S,
                what="three seconds of traffic answered before the kill",
                timeout_s=30,
            )
            traffic.phase = "failover"
            killed_at = time.monotonic()
            own_stack.processes["redis-primary"].kill()  # kill -9: no shutdown, no save
            # Admin writes fail until the sentinels promote the replica, then go there.
            after = await eventually(
                control.create_key,
                what="a key created through authz after the kill",
                timeout_s=FAILOVER_DEADLINE_S,
                ignoring=(grpc.aio.AioRpcError,),
            )
            first_write_s = time.monotonic() - killed_at
            await eventually(
                lambda: names_primary(own_stack, replica_port),
                what="every sentinel naming the promoted replica",
                timeout_s=FAILOVER_DEADLINE_S,
            )
            promoted_at = time.monotonic()
            traffic.phase = "after"
            print(  # the figure the failover test exists to report
                f"\nkill -9 of the primary to the first write accepted by the promoted "
                f"replica through authz: {first_write_s:.2f} s"
            )
            assert (await replica.info("replication"))["role"] == "master"

            def within() -> float:
                return max(0.1, BACK_WITHIN_S - (time.monotonic() - promoted_at))

            # The rate limiter counts in Redis again (the new primary), not locally.
            await eventually(
                control.degraded,
                lambda degraded: not degraded,
                what="the rate limiter back on Redis",
                timeout_s=within(),
                ignoring=(grpc.aio.AioRpcError,),
            )
            counted = await control.tenant_usage()
            await eventually(
                control.tenant_usage,
                lambda used: used > counted,
                what="the tenant's requests counted in Redis again",
                timeout_s=within(),
                ignoring=(grpc.aio.AioRpcError,),
            )
            # Each subscription moved to the new primary: as many followers on every channel.
            await eventually(
                lambda: subscribers(replica),
                lambda now: all(now.get(c, 0) >= n for c, n in subscribed.items()),
                what=f"the subscriptions {subscribed} on the promoted replica",
                timeout_s=within(),
            )
            # Every service instance reaches Redis again (its `redis` health component).
            await eventually(
                lambda: redis_components_serving(own_stack),
                lambda down: not down,
                what="every service's redis component SERVING",
                timeout_s=within(),
            )
            # The key written to the promoted replica is authorized, through the whole stack.
            new_key = {"authorization": f"Bearer {after.secret}"}
            body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "new"}]}
            await eventually(
                lambda: client.post(url, json=body, headers=new_key),
                lambda response: response.status_code == 200,
                what="the key created after the failover authorized",
                timeout_s=within(),
            )
            await eventually(
                lambda: traffic.answered("after") >= 3 * RATE_PER_S,
                what="three seconds of traffic answered after the promotion",
                timeout_s=30,
            )
        finally:
            sending.cancel()
            await asyncio.gather(sending, return_exceptions=True)
            await traffic.drain()
            await replica.aclose()
    failures = {p: {s: n for s, n in c.items() if s >= 500} for p, c in traffic.statuses.items()}
    assert failures == {"before": {}, "failover": {}, "after": {}}, traffic.statuses
    assert {s for c in traffic.statuses.values() for s in c} == {200}, traffic.statuses
    assert traffic.answered("failover") > 0, traffic.statuses
