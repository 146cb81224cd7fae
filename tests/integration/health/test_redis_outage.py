"""Redis dies under a running health service: it keeps answering and probing, reports Redis as
NOT_SERVING, refuses fleet-wide changes, and shares state again once Redis is back."""

from __future__ import annotations

import signal
from contextlib import AsyncExitStack
from pathlib import Path

import grpc
import pytest

from llmproxy._gen.health.v1 import health_pb2
from llmproxy.devstack.redis import redis_process
from tests.harness import logs
from tests.harness.fake_provider import fake_provider
from tests.harness.ports import free_port
from tests.harness.waiting import eventually
from tests.integration.health.conftest import HealthService, health_config, health_service

SETTINGS = {
    "probe": {"interval_s": 0.2, "timeout_s": 0.5, "degraded_latency_s": 0.5},
    "sync_interval_s": 0.05,
    "components_interval_s": 0.1,
}


async def wait_serving(service: HealthService, name: str, expected: str) -> None:
    await eventually(
        lambda: service.serving(name),
        lambda found: found == expected,
        what=f"{name} {expected}",
        timeout_s=10,
    )


async def test_redis_killed_and_restarted(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    redis = redis_process(url, tmp_path / "redis", tmp_path / "redis.log")
    logs.watch(request.node, redis)
    async with AsyncExitStack() as stack:
        redis.start()
        stack.callback(redis.stop)
        await redis.wait_ready(15)
        provider = await stack.enter_async_context(fake_provider())
        service = await health_service(stack, health_config(url, {"p": provider.url}, SETTINGS))
        await wait_serving(service, "llmproxy.health.redis", "SERVING")
        redis.signal(signal.SIGKILL)
        await wait_serving(service, "llmproxy.health.redis", "NOT_SERVING")
        assert await service.serving("") == "SERVING"  # on purpose: it still works
        # Probes and state carry on from memory.
        provider.knobs.outage = "503"
        await service.wait_for("p", "unhealthy", within_s=5)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await service.api.SetMaintenance(
                health_pb2.SetMaintenanceRequest(name="p", maintenance=True)
            )
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "Redis is unreachable" in (raised.value.details() or "")
        components = await service.api.ListComponents(health_pb2.ListComponentsRequest())
        assert not {c.name: c for c in components.components}["redis"].healthy
        provider.knobs.outage = "none"
        redis.start()  # the same port, empty
        await redis.wait_ready(15)
        await wait_serving(service, "llmproxy.health.redis", "SERVING")
        reply = await service.api.SetMaintenance(
            health_pb2.SetMaintenanceRequest(name="p", maintenance=True)
        )
        assert reply.provider.maintenance
        await service.wait_for("p", "healthy", within_s=10)
