"""Per-component gRPC health: each component its own name; required ones decide the overall."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer
from prometheus_client import REGISTRY

from llmproxy.common.component_health import ComponentHealth
from tests.harness.waiting import eventually

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class _Context:
    async def abort(self, code: object) -> None:
        raise LookupError(code)


async def status(health: HealthServicer, service: str) -> int:
    reply = await health.Check(health_pb2.HealthCheckRequest(service=service), _Context())
    return int(reply.status)


def redis_state(components: ComponentHealth) -> Callable[[], Awaitable[bool | None]]:
    async def probe() -> bool | None:
        return components.healthy.get("redis")

    return probe


async def test_a_component_is_reported_under_its_own_name() -> None:
    health = HealthServicer()
    components = ComponentHealth(health, "router", ["llmproxy.router.v1.RouterService"])
    await components.set("redis", False)
    assert await status(health, "llmproxy.router.redis") == NOT_SERVING
    # Not required: the service itself still serves.
    assert await status(health, "") == SERVING
    await components.set("redis", True)
    assert await status(health, "llmproxy.router.redis") == SERVING


async def test_a_required_component_decides_the_overall_status() -> None:
    health = HealthServicer()
    components = ComponentHealth(health, "ratelimit", ["svc.A"], required=("config",))
    await components.set("config", False)
    assert await status(health, "") == NOT_SERVING
    assert await status(health, "svc.A") == NOT_SERVING
    await components.set("redis", False)  # not required: changes nothing overall
    await components.set("config", True)
    assert components.serving
    assert await status(health, "") == SERVING
    assert await status(health, "svc.A") == SERVING


async def test_report_applies_from_a_callback_and_aclose_waits_for_it() -> None:
    health = HealthServicer()
    components = ComponentHealth(health, "ratelimit", [])
    components.report("redis", False)
    await components.aclose()
    assert await status(health, "llmproxy.ratelimit.redis") == NOT_SERVING


async def test_watch_follows_a_check_until_closed() -> None:
    health = HealthServicer()
    components = ComponentHealth(health, "fault", [])
    up = asyncio.Event()
    up.set()

    async def check() -> None:
        if not up.is_set():
            raise ConnectionError("refused")

    await components.watch("redis", check, interval_s=0.01, timeout_s=1)
    await eventually(
        redis_state(components),
        lambda healthy: healthy is True,
        what="the redis component",
        timeout_s=5,
    )
    up.clear()
    await eventually(
        redis_state(components),
        lambda healthy: healthy is False,
        what="the redis component",
        timeout_s=5,
    )
    assert await status(health, "llmproxy.fault.redis") == NOT_SERVING
    await components.aclose()


async def test_a_hanging_check_is_unhealthy_after_its_timeout() -> None:
    health = HealthServicer()
    components = ComponentHealth(health, "authz", [])

    async def hang() -> None:
        await asyncio.sleep(3600)

    await components.watch("redis", hang, interval_s=0.01, timeout_s=0.05)
    await eventually(
        redis_state(components),
        lambda healthy: healthy is False,
        what="the redis component",
        timeout_s=5,
    )
    await components.aclose()


async def test_each_state_is_exported_for_the_redis_down_alert() -> None:
    components = ComponentHealth(HealthServicer(), "router", [])
    await components.set("redis", False)
    assert REGISTRY.get_sample_value("llmproxy_component_up", {"component": "redis"}) == 0
    await components.set("redis", True)
    assert REGISTRY.get_sample_value("llmproxy_component_up", {"component": "redis"}) == 1
