"""The router's view of provider health: a WatchProviders subscriber and an outcome reporter.

`admit(provider)` answers from memory, so skipping an unhealthy target costs no round trip;
`record(...)` queues a call's outcome and returns at once. Neither ever blocks or fails a
request, whatever the health service does:

- while the watch stream is up, the last state received is what counts;
- when it breaks, the last known states are kept for `stale_after_s`, then every provider
  counts as available (the router must keep serving without the health service), and the
  stream is opened again with jittered exponential backoff;
- outcomes are sent in batches every `report_interval_s`; while the health service is away
  they wait in a bounded queue whose oldest entries are dropped (and counted) when full.

While a provider's circuit is half-open, this router admits at most `trial_calls` calls to it
until the health service says how the trials went.

`latency_s(provider, max_age_s)` is the average latency of the provider's passing probes in
the last state received, for least-latency routing; the stream sends a provider's state when
it changes, so its probes may be old, and only those younger than max_age_s count.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import random
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import grpc
from prometheus_client import Counter, Gauge

from llmproxy._gen.health.v1 import health_pb2, health_pb2_grpc
from llmproxy.common.credentials import bearer_metadata
from llmproxy.common.settings import GRPC_BALANCED, HealthClientSettings
from llmproxy.common.timestamps import duration
from llmproxy.common.timestamps import seconds as to_seconds
from llmproxy.router.providers import ProviderCallError
from llmproxy.router.providers.base import UnsupportedError

log = logging.getLogger(__name__)

VIEW_CONNECTED = Gauge(
    "llmproxy_router_health_view_connected",
    "1 while the router follows the health service's WatchProviders stream.",
)
SKIPPED = Counter(
    "llmproxy_router_health_skipped_targets_total",
    "Provider targets skipped because the health service says they are unavailable.",
    ["provider"],
)
REPORTS_DROPPED = Counter(
    "llmproxy_router_health_reports_dropped_total",
    "Call outcomes never delivered to the health service (queue full or send failed).",
)

_UNAVAILABLE_STATES = (health_pb2.PROVIDER_STATE_UNHEALTHY,)
_CHANNEL_OPTIONS = [
    # Notice a dead health service within seconds, within the server's ping allowance.
    ("grpc.keepalive_time_ms", 15_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    *GRPC_BALANCED,
]


class CallGate(Protocol):
    """What Failover asks before and tells after each provider call."""

    def admit(self, provider: str) -> bool:
        """Whether a call to provider should be tried now."""

    def record(self, provider: str, error: ProviderCallError | None, seconds: float) -> None:
        """Note the outcome of a call to provider (error None: it answered)."""


def call_ok(error: ProviderCallError | None) -> bool:
    """Whether a call's outcome counts for the provider's health (not against it).

    A provider that refuses the request itself (4xx), throttles (429) or lacks the operation
    answered correctly; a connect error, timeout, 408 or 5xx is its failure.
    """
    if error is None or isinstance(error, UnsupportedError):
        return True
    return not error.retryable or error.status == 429


@dataclass
class _Known:
    """The last state the health service sent for one provider."""

    available: bool
    half_open: bool
    trial_calls: int
    trials_started: int = 0
    probes: tuple[tuple[float, float], ...] = ()  # passing probes: (when, in Unix s; latency s)


def reporter_id() -> str:
    """Who this router is, in reports."""
    return f"router@{socket.gethostname()}:{os.getpid()}"


class HealthView:
    """Follows the health service; admits or skips provider targets and reports outcomes."""

    def __init__(
        self,
        target: str,
        settings: HealthClientSettings,
        clock: Callable[[], float] = time.monotonic,
        *,
        service_token: str,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._target = target
        self._wall_clock = wall_clock  # probe times are Unix times
        # Every call presents the service token (ReportOutcomes is for the services only).
        self._metadata = bearer_metadata(service_token)
        self._settings = settings
        self._clock = clock
        self._known: dict[str, _Known] = {}
        self._connected = False
        self._lost_at: float | None = None
        self._pending: collections.deque[health_pb2.CallOutcome] = collections.deque()
        self._wake = asyncio.Event()
        self._channel: grpc.aio.Channel | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._reporter = reporter_id()

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Start following the health service (in the background; returns at once)."""
        self._channel = grpc.aio.insecure_channel(self._target, options=_CHANNEL_OPTIONS)
        stub = health_pb2_grpc.ProviderHealthServiceStub(self._channel)
        self._tasks = [
            asyncio.create_task(self._watch_forever(stub)),
            asyncio.create_task(self._report_forever(stub)),
        ]

    async def aclose(self) -> None:
        """Send what is pending (briefly), then stop."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._channel is not None:
            if self._pending and self._connected:
                with contextlib.suppress(grpc.aio.AioRpcError, TimeoutError):
                    await self._send(health_pb2_grpc.ProviderHealthServiceStub(self._channel))
            await self._channel.close()
            self._channel = None
        self._set_connected(False)

    # --- what Failover calls ---------------------------------------------------------------

    def _trusted(self) -> bool:
        if self._connected:
            return True
        return (
            self._lost_at is not None
            and self._clock() - self._lost_at < self._settings.stale_after_s
        )

    def available(self, provider: str) -> bool:
        """Whether provider should get calls, as far as this router knows (no side effect)."""
        known = self._known.get(provider)
        if known is None or not self._trusted():
            return True  # unknown, or nothing trustworthy known: assume it works
        if known.half_open:
            return known.trials_started < known.trial_calls
        return known.available

    def admit(self, provider: str) -> bool:
        """available(provider), taking one of its trial calls while its circuit is half-open."""
        if not self.available(provider):
            SKIPPED.labels(provider).inc()
            return False
        known = self._known.get(provider)
        if known is not None and known.half_open and self._trusted():
            known.trials_started += 1
        return True

    def latency_s(self, provider: str, max_age_s: float) -> float | None:
        """Average latency of provider's passing probes of the last max_age_s; None if none."""
        known = self._known.get(provider)
        if known is None or not known.probes or not self._trusted():
            return None
        oldest = self._wall_clock() - max_age_s
        recent = [latency for at, latency in known.probes if at >= oldest]
        return sum(recent) / len(recent) if recent else None

    def record(self, provider: str, error: ProviderCallError | None, seconds: float) -> None:
        """Queue one call's outcome for the next batch; never blocks, never raises."""
        if len(self._pending) >= self._settings.max_pending:
            self._pending.popleft()
            REPORTS_DROPPED.inc()
        outcome = health_pb2.CallOutcome(
            provider=provider,
            ok=call_ok(error),
            status_code=200 if error is None else error.status,
        )
        outcome.latency.CopyFrom(duration(max(0.0, seconds)))
        self._pending.append(outcome)
        if len(self._pending) >= self._settings.max_batch:
            self._wake.set()

    # --- following the health service ------------------------------------------------------

    def _set_connected(self, connected: bool) -> None:
        if connected == self._connected:
            return
        self._connected = connected
        VIEW_CONNECTED.set(1 if connected else 0)
        if not connected:
            self._lost_at = self._clock()

    def apply(self, provider: health_pb2.Provider) -> None:
        """Take in one provider's state from the health service."""
        half_open = provider.circuit == health_pb2.CIRCUIT_STATE_HALF_OPEN
        available = provider.available and provider.state not in _UNAVAILABLE_STATES
        previous = self._known.get(provider.name)
        probes = tuple(
            (to_seconds(p.probe_time), to_seconds(p.latency)) for p in provider.probes if p.ok
        )
        known = _Known(available, half_open and available, provider.trial_calls, probes=probes)
        if previous is not None and previous.half_open and known.half_open:
            known.trials_started = previous.trials_started  # the same half-open episode
        self._known[provider.name] = known

    async def _watch_forever(self, stub: health_pb2_grpc.ProviderHealthServiceAsyncStub) -> None:
        delay = self._settings.reconnect_min_s
        while True:
            try:
                call = stub.WatchProviders(
                    health_pb2.WatchProvidersRequest(), metadata=self._metadata
                )
                async for message in call:
                    self.apply(message.provider)
                    if not self._connected:
                        log.info("following provider health", extra={"target": self._target})
                    self._set_connected(True)
                    delay = self._settings.reconnect_min_s
            except grpc.aio.AioRpcError as exc:
                if self._connected or self._lost_at is None:
                    log.warning(
                        "provider health unreachable: last known states kept for %s s",
                        self._settings.stale_after_s,
                        extra={"target": self._target, "code": exc.code().name},
                    )
            except Exception:  # a bug here must not stop the router from following health
                log.exception("provider health stream failed")
            self._set_connected(False)
            await asyncio.sleep(random.uniform(delay / 2, delay))  # noqa: S311 - jitter
            delay = min(self._settings.reconnect_max_s, delay * 2)

    async def _send(self, stub: health_pb2_grpc.ProviderHealthServiceAsyncStub) -> None:
        batch = [
            self._pending.popleft()
            for _ in range(min(len(self._pending), self._settings.max_batch))
        ]
        try:
            await stub.ReportOutcomes(
                health_pb2.ReportOutcomesRequest(outcomes=batch, reporter=self._reporter),
                timeout=self._settings.call_timeout_s,
                metadata=self._metadata,
            )
        except (grpc.aio.AioRpcError, TimeoutError):
            REPORTS_DROPPED.inc(len(batch))
            raise

    async def _report_forever(self, stub: health_pb2_grpc.ProviderHealthServiceAsyncStub) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._settings.report_interval_s)
            self._wake.clear()
            # While the health service is away, outcomes wait (bounded) instead of failing.
            while self._pending and self._connected:
                try:
                    await self._send(stub)
                except (grpc.aio.AioRpcError, TimeoutError) as exc:
                    log.debug("outcomes not reported", extra={"reason": str(exc)})
                    break
