"""ListComponents tells a degraded service from a normal one by its own Redis component."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2 as grpc_health_pb2
from grpc_health.v1 import health_pb2_grpc as grpc_health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from llmproxy._gen.health.v1 import health_pb2
from llmproxy.health.components import Components, grpc_service_check
from llmproxy.health.convert import component_message

SERVING = grpc_health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = grpc_health_pb2.HealthCheckResponse.NOT_SERVING


async def test_a_service_without_its_redis_is_healthy_but_degraded() -> None:
    health = HealthServicer()
    server = grpc.aio.server()
    grpc_health_pb2_grpc.add_HealthServicer_to_server(health, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        components = Components({"router": grpc_service_check(channel, "router", 1.0)}, 1.0)

        async def mode() -> tuple[bool, int, str]:
            await components.check_all()
            message = component_message(components.statuses["router"])
            return message.healthy, message.mode, message.reason

        # A service that reports no Redis component runs normally.
        assert await mode() == (True, health_pb2.COMPONENT_MODE_NORMAL, "ok")
        await health.set("llmproxy.router.redis", SERVING)
        assert await mode() == (True, health_pb2.COMPONENT_MODE_NORMAL, "ok")
        await health.set("llmproxy.router.redis", NOT_SERVING)
        healthy, degraded, reason = await mode()
        assert (healthy, degraded) == (True, health_pb2.COMPONENT_MODE_DEGRADED)
        assert "Redis is unreachable" in reason
        await health.set("", NOT_SERVING)
        assert await mode() == (
            False,
            health_pb2.COMPONENT_MODE_UNSPECIFIED,
            "reports NOT_SERVING",
        )
    finally:
        await channel.close()
        await server.stop(None)
