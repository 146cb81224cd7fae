"""Redis killed or frozen under load: decisions go on locally, then back to Redis."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
import redis.asyncio as aioredis
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import REGISTRY

from llmproxy.common.contract import component_health_name
from llmproxy.devstack.process import ManagedProcess
from tests.harness import logs
from tests.harness.redis_server import redis_server
from tests.harness.waiting import eventually
from tests.integration.ratelimit.conftest import (
    OK,
    OVER_LIMIT,
    Instance,
    StartRatelimit,
    descriptor,
    request,
)

LIMITS = """
domain: llmproxy
descriptors:
  - key: tenant
    rate_limit: {unit: minute, requests_per_unit: 1000000}
    descriptors:
      - key: key_id
        rate_limit: {unit: minute, requests_per_unit: 3, algorithm: sliding_log}
"""
# 3 a key: each phase of the test waits for 50 answers from 8 clients, so some client sends at
# least 7 in a phase, 4 or more of them with one key, whatever the machine's load (with 10 a
# key, a loaded machine could pass every phase under the limit of its store).


@pytest.fixture
def own_redis(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[str, ManagedProcess]]:
    """A redis-server of this test's own, which it may kill."""
    with redis_server(tmp_path / "redis") as (url, process):
        logs.watch(request.node, process)
        yield url, process


def degraded() -> float:
    return REGISTRY.get_sample_value("llmproxy_ratelimit_degraded") or 0.0


async def until_degraded(value: float) -> None:
    await eventually(degraded, lambda found: found == value, what=f"degraded {value}", timeout_s=20)


async def redis_health(instance: Instance) -> int:
    stub = health_pb2_grpc.HealthStub(instance.channel)
    reply = await stub.Check(
        health_pb2.HealthCheckRequest(service=component_health_name("ratelimit", "redis"))
    )
    return int(reply.status)


class Load:
    """Clients calling ShouldRateLimit in a loop; every answer and error is kept."""

    def __init__(self, instance: Instance, clients: int = 8) -> None:
        self.codes: list[int] = []
        self.errors: list[grpc.aio.AioRpcError] = []
        self._stop = asyncio.Event()
        self._instance = instance
        self._tasks = [asyncio.create_task(self._client(i)) for i in range(clients)]

    async def _client(self, index: int) -> None:
        count = 0
        while not self._stop.is_set():
            count += 1
            call = request(
                descriptor(("tenant", "acme")),
                descriptor(("tenant", "acme"), ("key_id", f"k{index}-{count // 20}")),
            )
            try:
                reply = await self._instance.rls.ShouldRateLimit(call, timeout=5)
            except grpc.aio.AioRpcError as exc:
                self.errors.append(exc)
            else:
                self.codes.append(reply.overall_code)
            await asyncio.sleep(0.002)  # a steady load, not a flood that starves the loop

    async def answered_more(self, count: int = 50) -> None:
        target = len(self.codes) + count
        await eventually(
            lambda: len(self.codes),
            lambda found: found >= target,
            what=f"{count} more answers",
            timeout_s=20,
        )

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


async def test_killed_redis_degrades_then_recovers(
    start_ratelimit: StartRatelimit,
    limits_file: Callable[[str], Path],
    own_redis: tuple[str, ManagedProcess],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    url, process = own_redis
    instance = await start_ratelimit(
        limits_file(LIMITS), url, redis_timeout_s="0.05", probe_interval_s="0.1"
    )
    load = Load(instance)
    try:
        await load.answered_more()
        assert degraded() == 0
        process.signal(signal.SIGKILL)
        await until_degraded(1)
        await load.answered_more()
        assert await redis_health(instance) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert "redis unavailable" in caplog.text

        # redis-server comes back on the same port: decisions return to it by themselves.
        process.start()
        await process.wait_ready(15)
        await until_degraded(0)
        await load.answered_more()
        assert await redis_health(instance) == health_pb2.HealthCheckResponse.SERVING
        assert "redis is back" in caplog.text
        client = aioredis.Redis.from_url(url)
        try:
            assert [k async for k in client.scan_iter(match="llmproxy:rl:*")]
        finally:
            await client.aclose()
    finally:
        await load.stop()
    assert load.errors == []  # Envoy never saw an error
    assert set(load.codes) <= {OK, OVER_LIMIT}
    assert OVER_LIMIT in load.codes  # the per-key limits held throughout


async def test_frozen_redis_times_out_into_local_decisions(
    start_ratelimit: StartRatelimit,
    limits_file: Callable[[str], Path],
    own_redis: tuple[str, ManagedProcess],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    url, process = own_redis
    instance = await start_ratelimit(
        limits_file(LIMITS), url, redis_timeout_s="0.05", probe_interval_s="0.1"
    )
    load = Load(instance, clients=4)
    try:
        await load.answered_more()
        process.signal(signal.SIGSTOP)  # still connected, never answers: the slow case
        try:
            await until_degraded(1)
            await load.answered_more()
        finally:
            process.signal(signal.SIGCONT)
        await until_degraded(0)
        await load.answered_more()
    finally:
        await load.stop()
    assert load.errors == []
    assert "redis is back" in caplog.text


async def test_the_fallback_divides_by_the_live_instances_not_the_configured_ones(
    start_ratelimit: StartRatelimit,
    limits_file: Callable[[str], Path],
    own_redis: tuple[str, ManagedProcess],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="llmproxy.common.live_count")
    url, process = own_redis
    # Configured as 1 instance (as an HPA's Deployment would be), but 2 run and register.
    limits = limits_file(LIMITS.replace("requests_per_unit: 3,", "requests_per_unit: 4,"))
    settings = {"redis_timeout_s": "0.05", "probe_interval_s": "0.1", "instances": "1"}
    first = await start_ratelimit(limits, url, **settings)
    await start_ratelimit(limits, url, **settings)

    def counted_two() -> int:
        return sum(
            1
            for r in caplog.records
            if r.getMessage() == "live instance count changed" and getattr(r, "instances", 0) == 2
        )

    # Each limiter has read the registry since both registered.
    await eventually(counted_two, lambda found: found == 2, what="both counting 2", timeout_s=15)
    process.signal(signal.SIGKILL)

    async def allowed(key: str) -> int:
        codes = [
            (
                await first.rls.ShouldRateLimit(
                    request(descriptor(("tenant", "acme"), ("key_id", key))), timeout=5
                )
            ).overall_code
            for _ in range(5)
        ]
        return codes.count(OK)

    assert await allowed("k1") == 2  # 4 divided by the 2 live instances, not by 1
    assert degraded() == 1


async def test_a_redis_slower_than_its_timeout_but_up_keeps_the_limit_exact(
    start_ratelimit: StartRatelimit,
    limits_file: Callable[[str], Path],
    own_redis: tuple[str, ManagedProcess],
) -> None:
    """Redis answering late is not Redis down: its answers still decide, none is guessed."""
    url, process = own_redis
    # Frozen for 1.5 timeouts: slow, not down (down takes 3 in a row).
    timeout_s = 0.3
    instance = await start_ratelimit(
        limits_file(LIMITS), url, redis_timeout_s=str(timeout_s), probe_interval_s="0.1"
    )
    call = request(descriptor(("tenant", "acme"), ("key_id", "slow")))
    for _ in range(3):  # the key's whole limit: Redis refuses it from now on
        assert (await instance.rls.ShouldRateLimit(call, timeout=5)).overall_code == OK
    process.signal(signal.SIGSTOP)
    try:

        async def one() -> int:
            return int((await instance.rls.ShouldRateLimit(call, timeout=5)).overall_code)

        burst = [asyncio.create_task(one()) for _ in range(6)]
        await asyncio.sleep(1.5 * timeout_s)
    finally:
        process.signal(signal.SIGCONT)
    codes = await asyncio.gather(*burst)
    # The local store, empty, would have admitted its share of the limit.
    assert codes == [OVER_LIMIT] * 6
    assert degraded() == 0
