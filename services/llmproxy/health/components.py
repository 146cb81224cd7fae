"""Health of what llmproxy runs on: Redis and each service, reported like the providers'.

Each component is checked every components_interval_s (Redis with PING, a service with the
standard gRPC health Check of its overall status) and published three ways: the gRPC health
service names `llmproxy.health.redis` and `llmproxy.health.service.<name>`, the metric
`llmproxy_health_component_up{component}`, and ListComponents.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llmproxy.common.contract import component_health_name
from llmproxy.health import metrics
from llmproxy.health.tasks import stop_if_cancelled

log = logging.getLogger(__name__)

NOT_CHECKED = "not checked yet"

Check = Callable[[], Awaitable[str | None]]
"""Raises with the reason if the component is unhealthy; returns why a healthy one is degraded,
or None when it runs normally."""


@dataclass(frozen=True)
class ComponentStatus:
    """The last check of one component."""

    name: str
    healthy: bool
    reason: str
    latency_s: float
    at: float
    health_service: str
    degraded: bool = False  # healthy, but on its fallback (its Redis unreachable)


def health_component(component: str) -> str:
    """This service's name for a component in its gRPC health: `redis`, `service.<name>`."""
    return component if component == "redis" else f"service.{component}"


def health_name(component: str) -> str:
    """The gRPC health service name a component is reported under."""
    return component_health_name("health", health_component(component))


def grpc_service_check(channel: grpc.aio.Channel, service: str, timeout_s: float) -> Check:
    """A check that asks a service's gRPC health for its overall status, then for its own
    Redis component (common.component_health): unreachable means it runs degraded."""
    # types-grpcio-health-checking declares HealthStub without its methods.
    stub: Any = health_pb2_grpc.HealthStub(channel)
    redis = component_health_name(service, "redis")

    async def check() -> str | None:
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout_s)
            if reply.status != health_pb2.HealthCheckResponse.SERVING:
                name = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
                raise ConnectionError(f"reports {name}")
            reply = await stub.Check(
                health_pb2.HealthCheckRequest(service=redis), timeout=timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return None  # a service that reports no Redis component
            raise ConnectionError(f"{exc.code().name}: {exc.details()}") from exc
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            return "serving on its fallback: its Redis is unreachable"
        return None

    return check


class Components:
    """Checks each component on an interval and keeps its latest status."""

    def __init__(
        self,
        checks: Mapping[str, Check],
        timeout_s: float,
        on_change: Callable[[ComponentStatus], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._checks = dict(checks)
        self._timeout_s = timeout_s
        self._on_change = on_change
        self._clock = clock
        now = clock()
        self.statuses = {
            name: ComponentStatus(name, False, NOT_CHECKED, 0.0, now, health_name(name))
            for name in checks
        }

    async def _check(self, name: str, check: Check) -> ComponentStatus:
        started = time.perf_counter()
        degraded = None
        try:
            async with asyncio.timeout(self._timeout_s):
                degraded = await check()
        except TimeoutError:
            healthy, reason = False, f"no answer within {self._timeout_s:g} s"
        except Exception as exc:  # any failure of a check is the component's ill health
            healthy, reason = False, str(exc) or type(exc).__name__
        else:
            healthy, reason = True, degraded or "ok"
        latency = time.perf_counter() - started
        metrics.COMPONENT_CHECK_SECONDS.labels(name).observe(latency)
        return ComponentStatus(
            name,
            healthy,
            reason,
            latency,
            self._clock(),
            health_name(name),
            degraded=degraded is not None,
        )

    async def check_all(self) -> None:
        """Check every component once, concurrently."""
        names = list(self._checks)
        results = await asyncio.gather(*(self._check(n, self._checks[n]) for n in names))
        for status in results:
            old = self.statuses[status.name]
            self.statuses[status.name] = status
            metrics.COMPONENT_UP.labels(status.name).set(1 if status.healthy else 0)
            if (old.healthy, old.reason) != (status.healthy, status.reason):
                first = old.reason == NOT_CHECKED
                # Services start together: one still starting at the first check is no news.
                if not first or not status.healthy:
                    log.log(
                        logging.INFO if status.healthy or first else logging.WARNING,
                        "component %s is %s",
                        status.name,
                        "healthy" if status.healthy else "unhealthy",
                        extra={"component": status.name, "reason": status.reason},
                    )
                if self._on_change is not None:
                    await self._on_change(status)

    async def run(self, interval_s: float) -> None:
        """Check every interval_s until cancelled."""
        while True:
            try:
                await self.check_all()
            except Exception:
                log.exception("component checks failed")
            stop_if_cancelled()
            await asyncio.sleep(interval_s)
