"""Health values as protobuf messages of llmproxy.health.v1."""

from __future__ import annotations

from llmproxy._gen.health.v1 import health_pb2
from llmproxy.common.timestamps import duration, timestamp
from llmproxy.health.components import ComponentStatus
from llmproxy.health.records import ProbeResult
from llmproxy.health.state import ProviderStatus

_STATES = {
    "unspecified": health_pb2.PROVIDER_STATE_UNSPECIFIED,
    "healthy": health_pb2.PROVIDER_STATE_HEALTHY,
    "degraded": health_pb2.PROVIDER_STATE_DEGRADED,
    "unhealthy": health_pb2.PROVIDER_STATE_UNHEALTHY,
}
_CIRCUITS = {
    "closed": health_pb2.CIRCUIT_STATE_CLOSED,
    "open": health_pb2.CIRCUIT_STATE_OPEN,
    "half_open": health_pb2.CIRCUIT_STATE_HALF_OPEN,
}


def probe_message(result: ProbeResult) -> health_pb2.ProbeResult:
    """A probe result as a message."""
    return health_pb2.ProbeResult(
        ok=result.ok,
        status_code=result.status,
        latency=duration(result.latency_s),
        detail=result.detail,
        probe_time=timestamp(result.at),
        mode=result.mode,
        instance=result.instance,
    )


def provider_message(status: ProviderStatus) -> health_pb2.Provider:
    """A provider's status as a message."""
    return health_pb2.Provider(
        name=status.name,
        kind=status.kind,
        base_url=status.base_url,
        state=_STATES[status.state],
        reason=status.reason,
        available=status.available,
        circuit=_CIRCUITS[status.circuit],
        maintenance=status.maintenance,
        maintenance_reason=status.maintenance_reason,
        enabled=status.enabled,
        probes=[probe_message(p) for p in status.probes],
        error_rate=status.error_rate,
        window_calls=status.window_calls,
        consecutive_failures=status.consecutive_failures,
        trial_calls=status.trial_calls,
        change_time=timestamp(status.changed_at),
    )


def component_message(component: ComponentStatus) -> health_pb2.Component:
    """A component's status as a message."""
    return health_pb2.Component(
        name=component.name,
        healthy=component.healthy,
        reason=component.reason,
        latency=duration(component.latency_s),
        check_time=timestamp(component.at),
        health_service=component.health_service,
        mode=_mode(component),
    )


def _mode(component: ComponentStatus) -> health_pb2.ComponentMode.ValueType:
    if not component.healthy or component.name == "redis":
        return health_pb2.COMPONENT_MODE_UNSPECIFIED
    if component.degraded:
        return health_pb2.COMPONENT_MODE_DEGRADED
    return health_pb2.COMPONENT_MODE_NORMAL
