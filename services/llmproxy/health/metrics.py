"""Prometheus metrics of provider health, circuits, probes, components and EDS."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from llmproxy.health.records import ProbeResult, Transition
from llmproxy.health.state import ProviderStatus

STATES = ("unspecified", "healthy", "degraded", "unhealthy")
CIRCUITS = ("closed", "open", "half_open")

PROVIDER_STATE = Gauge(
    "llmproxy_health_provider_state",
    "1 for the provider's current state, 0 for the others.",
    ["provider", "state"],
)
PROVIDER_AVAILABLE = Gauge(
    "llmproxy_health_provider_available",
    "1 when calls should go to the provider (not unhealthy, circuit not open, not drained).",
    ["provider"],
)
CIRCUIT_STATE = Gauge(
    "llmproxy_health_circuit_state",
    "1 for the provider's current circuit state, 0 for the others.",
    ["provider", "state"],
)
CIRCUIT_TRANSITIONS = Counter(
    "llmproxy_health_circuit_transitions_total",
    "Circuit state changes made by this instance.",
    ["provider", "from_state", "to_state"],
)
PROBE_SECONDS = Histogram(
    "llmproxy_health_probe_seconds",
    "Latency of active probes, by result.",
    ["provider", "result"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 1.5, 2.5, 5, 10),
)
OUTCOMES = Counter(
    "llmproxy_health_call_outcomes_total",
    "Call outcomes reported by routers, by result.",
    ["provider", "result"],
)
COMPONENT_UP = Gauge(
    "llmproxy_health_component_up",
    "1 when the component (redis, or an llmproxy service) passed its last check.",
    ["component"],
)
COMPONENT_CHECK_SECONDS = Histogram(
    "llmproxy_health_component_check_seconds",
    "Latency of component checks.",
    ["component"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
)
EDS_PUSHES = Counter("llmproxy_health_eds_responses_total", "Endpoint assignments sent to Envoy.")
EDS_NACKS = Counter("llmproxy_health_eds_nacks_total", "Endpoint assignments Envoy rejected.")
ENVOY_REPLICAS = Gauge(
    "llmproxy_health_envoy_replicas",
    "Envoy replicas with an EDS stream open: to this instance (view=connected), or to any "
    "instance, as this one serves them in envoy_replicas (view=served).",
    ["view"],
)
ENVOY_REPLICAS_SHARED = Gauge(
    "llmproxy_health_envoy_replicas_shared",
    "1 while envoy_replicas lists the Envoys of every health instance (read from Redis), 0 while "
    "Redis is unreachable and it lists this instance's only.",
)


def observe_status(status: ProviderStatus, _old: ProviderStatus | None = None) -> None:
    """Set the state gauges of status's provider."""
    for state in STATES:
        PROVIDER_STATE.labels(status.name, state).set(1 if status.state == state else 0)
    for state in CIRCUITS:
        CIRCUIT_STATE.labels(status.name, state).set(1 if status.circuit == state else 0)
    PROVIDER_AVAILABLE.labels(status.name).set(1 if status.available else 0)


def observe_probe(provider: str, result: ProbeResult) -> None:
    """Record one probe's latency."""
    PROBE_SECONDS.labels(provider, "ok" if result.ok else "failed").observe(result.latency_s)


def observe_transition(provider: str, transition: Transition) -> None:
    """Count one circuit transition."""
    CIRCUIT_TRANSITIONS.labels(provider, transition.before, transition.after).inc()
