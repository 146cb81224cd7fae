"""A provider's health as a pure function of what the fleet shares about it and the time.

Order of precedence, first match wins:
  not enabled (startup probe failed)      UNHEALTHY
  no probe yet                            UNSPECIFIED ("not probed yet")
  probes down (hysteresis below)          UNHEALTHY
  circuit open                            UNHEALTHY
  circuit half-open                       DEGRADED
  last probe failed, rate limited or slow DEGRADED
  error rate of calls above the threshold DEGRADED
  otherwise                               HEALTHY
Maintenance is orthogonal: the state stays what it is, but the provider is not available.

Reasons avoid measured numbers (those are in the probe results), so that a change of reason is a
change worth telling watchers about.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from llmproxy.common.settings import ProviderSettings
from llmproxy.health import circuit
from llmproxy.health.records import Circuit, ProbeResult, SharedState
from llmproxy.health.settings import HealthSettings

State = Literal["unspecified", "healthy", "degraded", "unhealthy"]


@dataclass(frozen=True)
class ProviderStatus:
    """Everything known about one provider's health at one moment."""

    name: str
    kind: str
    base_url: str
    state: State
    reason: str
    circuit: Circuit = "closed"
    maintenance: bool = False
    maintenance_reason: str = ""
    enabled: bool = True
    probes: tuple[ProbeResult, ...] = ()
    error_rate: float = 0.0
    window_calls: int = 0
    consecutive_failures: int = 0
    trial_calls: int = 0
    changed_at: float = 0.0

    @property
    def available(self) -> bool:
        """Whether calls should go to it."""
        return (
            self.enabled
            and not self.maintenance
            and self.state != "unhealthy"
            and self.circuit != "open"
        )

    def key(self) -> tuple[object, ...]:
        """What a watcher is told about when it changes."""
        return (
            self.state,
            self.reason,
            self.circuit,
            self.maintenance,
            self.maintenance_reason,
            self.enabled,
        )

    def stamped(self, previous: ProviderStatus | None, now: float) -> ProviderStatus:
        """This status with changed_at carried over from previous, or now if it changed."""
        if previous is not None and previous.key() == self.key():
            return replace(self, changed_at=previous.changed_at)
        return replace(self, changed_at=now)


def probes_down(
    newest_first: Sequence[ProbeResult], unhealthy_after: int, healthy_after: int
) -> bool:
    """Whether the probes say the provider is down, with hysteresis.

    Down after unhealthy_after failures in a row; up again only after healthy_after passes in a
    row. Replayed oldest first over the results kept, starting from up.
    """
    down = False
    failures = passes = 0
    for result in reversed(newest_first):
        if result.ok:
            failures, passes = 0, passes + 1
            if down and passes >= healthy_after:
                down = False
        else:
            failures, passes = failures + 1, 0
            if failures >= unhealthy_after:
                down = True
    return down


def _probe_verdict(
    probes: Sequence[ProbeResult], settings: HealthSettings
) -> tuple[State, str] | None:
    probe = settings.probe
    last = probes[0]
    if probes_down(probes, probe.unhealthy_after, probe.healthy_after):
        if last.ok:
            passes = probe.healthy_after
            return "unhealthy", f"recovering: fewer than {passes} probes passed in a row"
        return "unhealthy", f"probes failing: {last.detail}"
    return None


def _soft_verdict(
    probes: Sequence[ProbeResult], settings: HealthSettings
) -> tuple[State, str] | None:
    last = probes[0]
    if not last.ok:
        return "degraded", f"last probe failed: {last.detail}"
    if last.rate_limited:
        return "degraded", "rate limited: the probe was answered 429"
    if last.latency_s > settings.probe.degraded_latency_s:
        return "degraded", f"slow: the last probe took over {settings.probe.degraded_latency_s:g} s"
    return None


def evaluate(
    provider: ProviderSettings, shared: SharedState, settings: HealthSettings, now: float
) -> ProviderStatus:
    """The health of provider now, from the state the fleet shares."""
    breaker, _ = circuit.advance(shared.circuit, settings.circuit, now)
    slices = settings.circuit.buckets
    calls, failures = breaker.window(now, circuit.slice_s(settings.circuit), slices)
    base = ProviderStatus(
        name=provider.name,
        kind=provider.kind,
        base_url=provider.base_url,
        state="unspecified",
        reason="",
        circuit=breaker.state,
        maintenance=shared.admin.maintenance,
        maintenance_reason=shared.admin.maintenance_reason,
        enabled=not shared.admin.disabled_reason,
        probes=shared.probes[: settings.probe.history],
        error_rate=failures / calls if calls else 0.0,
        window_calls=calls,
        consecutive_failures=breaker.consecutive_failures,
        trial_calls=settings.circuit.half_open_calls if breaker.state == "half_open" else 0,
    )
    state, reason = _verdict(shared, breaker.state, breaker.reason, base, settings)
    return replace(base, state=state, reason=reason)


def _circuit_verdict(breaker: Circuit, breaker_reason: str) -> tuple[State, str] | None:
    if breaker == "open":
        return "unhealthy", f"circuit open: {breaker_reason}"
    if breaker == "half_open":
        return "degraded", "circuit half-open: trial calls decide"
    return None


def _error_rate_verdict(
    status: ProviderStatus, settings: HealthSettings
) -> tuple[State, str] | None:
    threshold = settings.circuit.degraded_error_rate
    if (
        threshold > 0
        and status.window_calls >= settings.circuit.min_calls
        and status.error_rate >= threshold
    ):
        return "degraded", f"calls failing: error rate at or above {threshold:.0%}"
    return None


def _verdict(
    shared: SharedState,
    breaker: Circuit,
    breaker_reason: str,
    status: ProviderStatus,
    settings: HealthSettings,
) -> tuple[State, str]:
    if shared.admin.disabled_reason:
        return "unhealthy", f"not enabled: {shared.admin.disabled_reason}"
    if not shared.probes:
        return "unspecified", "not probed yet"
    verdicts = (
        _probe_verdict(shared.probes, settings),
        _circuit_verdict(breaker, breaker_reason),
        _soft_verdict(shared.probes, settings),
        _error_rate_verdict(status, settings),
    )
    return next((v for v in verdicts if v is not None), ("healthy", "probes pass"))
