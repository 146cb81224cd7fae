"""Health per component of one service, in the standard grpc.health.v1 service.

As envoyproxy/ratelimit reports it: each component is a health service name of its own,
`llmproxy.<service>.<component>` (common.contract.component_health_name), SERVING while it is
healthy. A component marked required also decides the service's overall status ("" and every
registered service, what Envoy's health checks ask): SERVING only while every required component
is. Components a service can do without, such as Redis for a service with a local fallback, stay
out of the overall status on purpose: NOT_SERVING on every instance at once would make Envoy
skip the service altogether, which is worse than what the service does without them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Sequence

from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer
from prometheus_client import Gauge

from llmproxy.common.contract import component_health_name

log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

# The same states for Prometheus (the RedisDown alert reads component="redis").
COMPONENT_UP = Gauge(
    "llmproxy_component_up",
    "1 while this process's component (redis, config, ...) is healthy, 0 while not.",
    ["component"],
)

Check = Callable[[], Awaitable[object]]
"""Returns if the component is healthy, raises with the reason otherwise."""


class ComponentHealth:
    """The components of one service and the gRPC health statuses they decide."""

    def __init__(
        self,
        health: HealthServicer,
        service: str,
        overall: Sequence[str],
        required: Collection[str] = (),
    ) -> None:
        self._health = health
        self._service = service
        self._overall = ("", *overall)
        self._required = frozenset(required)
        self.healthy: dict[str, bool] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._watches: list[asyncio.Task[None]] = []

    @property
    def serving(self) -> bool:
        """Whether every required component is healthy (one not reported yet counts as not)."""
        return all(self.healthy.get(name, False) for name in self._required)

    async def set(self, component: str, healthy: bool) -> None:
        """Report one component's state, and the overall status if it is required."""
        self.healthy[component] = healthy
        COMPONENT_UP.labels(component).set(1 if healthy else 0)
        name = component_health_name(self._service, component)
        await self._health.set(name, SERVING if healthy else NOT_SERVING)
        if component in self._required:
            overall = SERVING if self.serving else NOT_SERVING
            for service in self._overall:
                await self._health.set(service, overall)

    def report(self, component: str, healthy: bool) -> None:
        """set(), from code that cannot await (a store's state callback)."""
        task = asyncio.get_running_loop().create_task(self.set(component, healthy))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def watch(
        self, component: str, check: Check, interval_s: float, timeout_s: float
    ) -> None:
        """Check the component now, then every interval_s until aclose(), and report it.

        The first check is awaited, so the component has a state as soon as this returns.
        """
        await self._check(component, check, timeout_s)
        self._watches.append(
            asyncio.get_running_loop().create_task(
                self._watch(component, check, interval_s, timeout_s)
            )
        )

    async def _watch(
        self, component: str, check: Check, interval_s: float, timeout_s: float
    ) -> None:
        while True:
            await asyncio.sleep(interval_s)
            await self._check(component, check, timeout_s)

    async def _check(self, component: str, check: Check, timeout_s: float) -> None:
        try:
            async with asyncio.timeout(timeout_s):
                await check()
        except Exception as exc:  # any failure of a check is the component's ill health
            if self.healthy.get(component, True):
                log.warning(
                    "component %s is unhealthy",
                    component,
                    extra={"component": component, "reason": str(exc) or type(exc).__name__},
                )
            await self.set(component, False)
        else:
            if self.healthy.get(component) is False:
                log.info("component %s is healthy again", component)
            await self.set(component, True)

    async def aclose(self) -> None:
        """Stop the watches, then wait for reports still being applied."""
        for task in self._watches:
            task.cancel()
        await asyncio.gather(*self._watches, *self._tasks, return_exceptions=True)
