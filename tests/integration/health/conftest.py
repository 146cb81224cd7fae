"""The health service in process on a free port, over the session's real Redis, probing fake
providers served in process (each with live fault knobs)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2 as grpc_health_pb2
from grpc_health.v1 import health_pb2_grpc as grpc_health_pb2_grpc

from llmproxy._gen.health.v1 import health_pb2, health_pb2_grpc
from llmproxy.common.server import RunningServer
from llmproxy.config import StackConfig
from llmproxy.health.server import serve
from tests.harness.services import Served, served
from tests.harness.waiting import eventually

STATES = {
    "unspecified": health_pb2.PROVIDER_STATE_UNSPECIFIED,
    "healthy": health_pb2.PROVIDER_STATE_HEALTHY,
    "degraded": health_pb2.PROVIDER_STATE_DEGRADED,
    "unhealthy": health_pb2.PROVIDER_STATE_UNHEALTHY,
}


def health_config(
    redis_url: str, providers: Mapping[str, str], health: Mapping[str, Any] | None = None
) -> StackConfig:
    """A stack whose providers are the given fake provider URLs (no keys), health on port 0.

    The other services are on port 0 too, so the health service does not check them.
    """
    services: dict[str, Any] = {
        name: {"grpc_port": 0, "metrics_port": 0}
        for name in ("router", "ratelimit", "authz", "fault")
    }
    services["health"] = {"grpc_port": 0, "metrics_port": 0, **(health or {})}
    return StackConfig.model_validate(
        {
            "redis": {"url": redis_url},
            "services": services,
            "providers": [
                {"name": name, "base_url": f"{url}/v1", "api_key_env": None}
                for name, url in providers.items()
            ],
        }
    )


@dataclass
class HealthService:
    """A running health service and clients of its APIs."""

    running: RunningServer
    channel: grpc.aio.Channel
    config: StackConfig
    internal: grpc.aio.Channel  # with the service token, as the router reports outcomes

    @property
    def api(self) -> health_pb2_grpc.ProviderHealthServiceAsyncStub:
        return health_pb2_grpc.ProviderHealthServiceStub(self.channel)

    @property
    def reporter(self) -> health_pb2_grpc.ProviderHealthServiceAsyncStub:
        """The API as the router calls it: ReportOutcomes is for the stack's services only."""
        return health_pb2_grpc.ProviderHealthServiceStub(self.internal)

    @property
    def grpc_health(self) -> Any:
        # types-grpcio-health-checking declares HealthStub without its methods.
        return grpc_health_pb2_grpc.HealthStub(self.channel)

    async def provider(self, name: str) -> health_pb2.Provider:
        reply = await self.api.GetProvider(health_pb2.GetProviderRequest(name=name))
        return reply.provider

    async def serving(self, service: str) -> str:
        """The status of a health service name; "NOT_FOUND" before it is first reported (a
        component's first check may still be running)."""
        request = grpc_health_pb2.HealthCheckRequest(service=service)
        try:
            reply = await self.grpc_health.Check(request)
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise
            return "NOT_FOUND"
        return str(grpc_health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))

    async def wait_for(self, name: str, state: str, within_s: float) -> float:
        """Seconds until provider name reaches state, polled; fails after within_s."""
        started = time.monotonic()
        await eventually(
            lambda: self.provider(name),
            lambda found: found.state == STATES[state],
            what=f"{name} {state}",
            timeout_s=within_s,
        )
        return time.monotonic() - started


StartHealth = Callable[..., Awaitable[HealthService]]


async def health_service(stack: AsyncExitStack, config: StackConfig) -> HealthService:
    """Start the health service for config; stack stops it."""
    service: Served = await stack.enter_async_context(served(serve(config)))
    return HealthService(service.running, service.channel, config, service.internal)


@pytest.fixture
async def start_health(redis_process: str, redis_client: Any) -> AsyncIterator[StartHealth]:
    """Start health services on the session Redis (flushed first); all stopped after."""
    async with AsyncExitStack() as stack:

        async def start(
            providers: Mapping[str, str], health: Mapping[str, Any] | None = None
        ) -> HealthService:
            return await health_service(stack, health_config(redis_process, providers, health))

        yield start
