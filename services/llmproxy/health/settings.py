"""The provider health service's part of the configuration.

The defaults detect a provider that goes down within about 3.5 s (two failed probes a second
apart, each timing out after 1.5 s at worst) and bring it back within about 2 s of recovering
(two passing probes), or a few seconds more when its circuit opened meanwhile.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from llmproxy.common.settings import HealthClientSettings, ServiceSettings, StrictModel

ProbeMode = Literal["models", "completion"]


class ProbeSettings(StrictModel):
    """Active probes: one real API call per provider per interval, across every instance."""

    interval_s: float = Field(
        1.0,
        ge=0.1,
        le=3600,
        description="How often each provider is probed (once per interval "
        "for the whole fleet of health instances, coordinated through Redis).",
    )
    timeout_s: float = Field(
        1.5, gt=0, le=60, description="A probe with no complete answer after this has failed."
    )
    unhealthy_after: int = Field(
        2, ge=1, le=100, description="Failed probes in a row that make a provider UNHEALTHY."
    )
    healthy_after: int = Field(
        2, ge=1, le=100, description="Passing probes in a row that bring an UNHEALTHY one back."
    )
    degraded_latency_s: float = Field(
        1.0, gt=0, le=60, description="A passing probe slower than this makes it DEGRADED."
    )
    history: int = Field(
        5, ge=1, le=100, description="Probe results kept and shown per provider (newest first)."
    )
    startup_required: bool = Field(
        True,
        description="A provider whose first probe fails at startup is not enabled (no call goes "
        "to it) until ProbeNow succeeds; false: it is only marked UNHEALTHY and probed on.",
    )
    max_in_flight: int = Field(
        2,
        ge=1,
        le=10,
        description="Probes of one provider that may run at once in one instance, so that a "
        "hanging provider is still probed every interval.",
    )


class ProviderProbeSettings(StrictModel):
    """How one provider is probed, when not the default."""

    mode: ProbeMode = Field(
        "models",
        description="'models' (GET /models, or the provider's equivalent: costs no tokens) or "
        "'completion' (a one-token chat completion of `model`).",
    )
    model: str | None = Field(
        None, min_length=1, description="The model of the one-token completion probe."
    )

    @model_validator(mode="after")
    def _completion_needs_a_model(self) -> ProviderProbeSettings:
        if self.mode == "completion" and self.model is None:
            raise ValueError("a 'completion' probe needs `model`")
        return self


class CircuitSettings(StrictModel):
    """The circuit breaker of each provider, fed by the outcomes of real calls."""

    consecutive_failures: int = Field(
        5, ge=1, le=1000, description="Failed calls in a row that open the circuit."
    )
    error_rate: float = Field(
        0.5, gt=0, le=1, description="Share of failed calls in the window that opens it."
    )
    window_s: float = Field(30.0, ge=1, le=3600, description="The error-rate window.")
    buckets: int = Field(
        10, ge=1, le=120, description="The window is counted in this many time slices."
    )
    min_calls: int = Field(
        20, ge=1, le=100_000, description="Calls the window needs before its error rate counts."
    )
    open_s: float = Field(
        3.0, gt=0, le=3600, description="How long an open circuit holds calls back."
    )
    half_open_calls: int = Field(
        3, ge=1, le=1000, description="Trial calls each router may send while half-open."
    )
    close_after: int = Field(
        2,
        ge=1,
        le=1000,
        description="Successful trials (calls or probes) that close a half-open circuit; one "
        "failed trial opens it again.",
    )
    degraded_error_rate: float = Field(
        0.1,
        ge=0,
        le=1,
        description="Share of failed calls in the window (with min_calls) that makes a "
        "provider DEGRADED while its circuit stays closed.",
    )


class HealthSettings(ServiceSettings):
    """Where the provider health service listens, how it probes and when it opens circuits."""

    grpc_port: int = Field(50054, ge=0, le=65535, description="gRPC port.")
    metrics_port: int = Field(9104, ge=0, le=65535, description="Prometheus /metrics port.")
    shutdown_grace_s: float = Field(
        2.0,
        gt=0,
        le=300,
        description="How long in-flight RPCs may run after SIGTERM; watch and EDS streams "
        "never end by themselves, so this is how long they delay a shutdown.",
    )
    probe: ProbeSettings = ProbeSettings()
    provider_probes: dict[str, ProviderProbeSettings] = Field(
        default_factory=dict,
        description="Per-provider probe settings by provider name, e.g. a one-token "
        "completion for a provider whose model list says nothing about its health.",
    )
    circuit: CircuitSettings = CircuitSettings()
    sync_interval_s: float = Field(
        0.25,
        gt=0,
        le=60,
        description="How often each instance reads the shared state (probes, circuits, "
        "maintenance) from Redis.",
    )
    components_interval_s: float = Field(
        2.0, gt=0, le=600, description="How often Redis and every service are checked."
    )
    dns_refresh_s: float = Field(
        30.0,
        gt=0,
        le=86400,
        description="How often provider host names are resolved again for Envoy's endpoints.",
    )
    key_prefix: str = Field(
        "llmproxy:health", min_length=1, description="Prefix of every Redis key of the service."
    )
    client: HealthClientSettings = HealthClientSettings()

    @model_validator(mode="after")
    def _check(self) -> HealthSettings:
        if self.probe.degraded_latency_s > self.probe.timeout_s:
            raise ValueError("probe.degraded_latency_s must not exceed probe.timeout_s")
        if self.client.reconnect_min_s > self.client.reconnect_max_s:
            raise ValueError("client.reconnect_min_s must not exceed client.reconnect_max_s")
        return self

    def probe_for(self, provider: str) -> ProviderProbeSettings:
        """How provider is probed: its own settings, else GET /models (no tokens)."""
        return self.provider_probes.get(provider) or ProviderProbeSettings()
