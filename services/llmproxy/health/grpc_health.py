"""Provider health mirrored into the standard grpc.health.v1.Health service.

One service name per provider, `llmproxy.health.provider.<name>`: SERVING while calls should
go to it, NOT_SERVING when unhealthy, its circuit open, drained or not enabled, UNKNOWN until it
is first probed. `Check` answers from the mirror and `Watch` streams its changes, as the
standard servicer does.
"""

from __future__ import annotations

from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer

from llmproxy.common.contract import PROVIDER_HEALTH_PREFIX
from llmproxy.health.registry import Registry
from llmproxy.health.state import ProviderStatus

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
UNKNOWN = health_pb2.HealthCheckResponse.UNKNOWN


def provider_health_name(provider: str) -> str:
    """The gRPC health service name of provider."""
    return PROVIDER_HEALTH_PREFIX + provider


def serving_status(status: ProviderStatus) -> int:
    """The gRPC serving status of a provider's status."""
    if not status.available:
        return NOT_SERVING
    if status.state == "unspecified":
        return UNKNOWN
    return SERVING


async def mirror_providers(registry: Registry, health: HealthServicer) -> None:
    """Keep health in step with registry until cancelled."""
    with registry.subscribe() as subscription:
        for status in registry.statuses():
            await health.set(provider_health_name(status.name), serving_status(status))
        while True:
            for name in await subscription.changes():
                status = registry.status(name)
                await health.set(provider_health_name(name), serving_status(status))
