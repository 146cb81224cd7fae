"""The provider health control API: every answer comes from this instance's memory.

Reads (ListProviders, GetProvider, WatchProviders, ListComponents) never wait on a probe or on
Redis. ProbeNow waits for its own probe (bounded by probe.timeout_s); SetMaintenance and
ReportOutcomes write the shared state. Bad input is INVALID_ARGUMENT or NOT_FOUND with a message
naming the field, never a crash.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import NoReturn

import grpc

from llmproxy._gen.health.v1 import health_pb2, health_pb2_grpc
from llmproxy.common.grpc_types import Context
from llmproxy.common.timestamps import seconds as duration_seconds
from llmproxy.health.components import Components
from llmproxy.health.convert import component_message, probe_message, provider_message
from llmproxy.health.errors import (
    HealthError,
    InvalidRequestError,
    StoreUnavailableError,
    UnknownProviderError,
)
from llmproxy.health.monitor import Monitor
from llmproxy.health.records import Outcome
from llmproxy.health.registry import Registry

log = logging.getLogger(__name__)

MAX_OUTCOMES = 10_000
MAX_REASON = 256
MAX_REPORTER = 200


async def _abort(context: Context, err: HealthError) -> NoReturn:
    code = grpc.StatusCode.INTERNAL
    if isinstance(err, InvalidRequestError):
        code = grpc.StatusCode.INVALID_ARGUMENT
    elif isinstance(err, UnknownProviderError):
        code = grpc.StatusCode.NOT_FOUND
    elif isinstance(err, StoreUnavailableError):
        code = grpc.StatusCode.UNAVAILABLE
    await context.abort(code, str(err))


def _required_name(name: str, field: str = "name") -> str:
    if not name:
        raise InvalidRequestError(f"{field} is required: the name of a configured provider")
    return name


def parse_outcomes(request: health_pb2.ReportOutcomesRequest) -> list[tuple[str, Outcome]]:
    """The request's outcomes, or InvalidRequestError naming the first bad field."""
    if len(request.outcomes) > MAX_OUTCOMES:
        raise InvalidRequestError(
            f"outcomes: at most {MAX_OUTCOMES} per call, got {len(request.outcomes)}"
        )
    if len(request.reporter) > MAX_REPORTER:
        raise InvalidRequestError(f"reporter: at most {MAX_REPORTER} characters")
    parsed = []
    for index, item in enumerate(request.outcomes):
        provider, status, latency = item.provider, item.status_code, item.latency
        if not provider:
            _required_name(provider, f"outcomes[{index}].provider")
        if not 0 <= status <= 599:
            raise InvalidRequestError(
                f"outcomes[{index}].status_code must be an HTTP status (or 0 for no answer), "
                f"got {status}"
            )
        seconds = duration_seconds(latency)
        if seconds < 0 or latency.nanos < 0:
            raise InvalidRequestError(f"outcomes[{index}].latency must not be negative")
        parsed.append((provider, Outcome(item.ok, status, seconds)))
    return parsed


class ProviderHealthServicer(health_pb2_grpc.ProviderHealthServiceServicer):
    """Answers the llmproxy.health.v1 API from the registry; changes go through the monitor."""

    def __init__(self, registry: Registry, monitor: Monitor, components: Components) -> None:
        self._registry = registry
        self._monitor = monitor
        self._components = components

    async def ListProviders(
        self, request: health_pb2.ListProvidersRequest, context: Context
    ) -> health_pb2.ListProvidersResponse:
        """List every provider with its last known state."""
        return health_pb2.ListProvidersResponse(
            providers=[provider_message(s) for s in self._registry.statuses()]
        )

    async def GetProvider(
        self, request: health_pb2.GetProviderRequest, context: Context
    ) -> health_pb2.GetProviderResponse:
        """One provider's state, circuit and last probes."""
        try:
            status = self._registry.status(_required_name(request.name))
        except HealthError as err:
            await _abort(context, err)
        return health_pb2.GetProviderResponse(provider=provider_message(status))

    async def WatchProviders(
        self, request: health_pb2.WatchProvidersRequest, context: Context
    ) -> AsyncIterator[health_pb2.WatchProvidersResponse]:
        """The current state of each watched provider, then each change, until cancelled."""
        try:
            names = [_required_name(n, "names[]") for n in request.names] or self._registry.names()
            for name in names:
                self._registry.provider(name)
        except HealthError as err:
            await _abort(context, err)
        watched = list(dict.fromkeys(names))
        # Subscribed before the snapshot: a change in between is sent, not lost.
        with self._registry.subscribe() as subscription:
            sent = {}
            for name in watched:
                status = self._registry.status(name)
                sent[name] = status.key()
                yield health_pb2.WatchProvidersResponse(
                    provider=provider_message(status), initial=True
                )
            while True:
                changed = await subscription.changes()
                for name in watched:
                    status = self._registry.status(name)
                    if name in changed and status.key() != sent[name]:
                        sent[name] = status.key()
                        yield health_pb2.WatchProvidersResponse(provider=provider_message(status))

    async def ProbeNow(
        self, request: health_pb2.ProbeNowRequest, context: Context
    ) -> health_pb2.ProbeNowResponse:
        """Probe one provider now; enables it if its startup probe had failed and this passes."""
        try:
            result, status = await self._monitor.probe_now(_required_name(request.name))
        except HealthError as err:
            await _abort(context, err)
        return health_pb2.ProbeNowResponse(
            result=probe_message(result), provider=provider_message(status)
        )

    async def SetMaintenance(
        self, request: health_pb2.SetMaintenanceRequest, context: Context
    ) -> health_pb2.SetMaintenanceResponse:
        """Drain a provider by hand (Envoy gets it as DRAINING, routers skip it), or undo."""
        try:
            name = _required_name(request.name)
            if len(request.reason) > MAX_REASON:
                raise InvalidRequestError(
                    f"reason: at most {MAX_REASON} characters, got {len(request.reason)}"
                )
            reason = request.reason or ("drained by hand" if request.maintenance else "")
            status = await self._monitor.set_maintenance(name, request.maintenance, reason)
        except HealthError as err:
            await _abort(context, err)
        return health_pb2.SetMaintenanceResponse(provider=provider_message(status))

    async def ReportOutcomes(
        self, request: health_pb2.ReportOutcomesRequest, context: Context
    ) -> health_pb2.ReportOutcomesResponse:
        """Feed call outcomes to the circuit breakers; unknown providers are listed back."""
        try:
            parsed = parse_outcomes(request)
        except HealthError as err:
            await _abort(context, err)
        by_provider: dict[str, list[Outcome]] = {}
        unknown: set[str] = set()
        for name, outcome in parsed:
            if name in self._registry.providers:
                by_provider.setdefault(name, []).append(outcome)
            else:
                unknown.add(name)
        if unknown:
            log.info(
                "outcomes of unknown providers ignored",
                extra={"providers": sorted(unknown), "reporter": request.reporter},
            )
        await self._monitor.report(by_provider)
        return health_pb2.ReportOutcomesResponse(
            accepted=sum(len(b) for b in by_provider.values()),
            unknown_providers=sorted(unknown),
        )

    async def ListComponents(
        self, request: health_pb2.ListComponentsRequest, context: Context
    ) -> health_pb2.ListComponentsResponse:
        """The last check of Redis and of each llmproxy service."""
        return health_pb2.ListComponentsResponse(
            components=[component_message(c) for c in self._components.statuses.values()]
        )
