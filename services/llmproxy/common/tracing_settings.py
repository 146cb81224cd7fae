"""The `tracing` section of the configuration: where OpenTelemetry spans go, and how many."""

from __future__ import annotations

from pydantic import Field

from llmproxy.common.settings import StrictModel


class TracingSettings(StrictModel):
    """OpenTelemetry tracing of Envoy and every service; off unless otlp_endpoint is set."""

    otlp_endpoint: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9.\-]+:[0-9]{1,5}$|^\[[0-9A-Fa-f:]+\]:[0-9]{1,5}$",
        description="host:port of an OTLP/gRPC collector (Jaeger, otel-collector ...); "
        "null turns tracing off: no instrumentation is installed at all.",
    )
    sample_ratio: float = Field(
        1.0,
        ge=0,
        le=1,
        description="Share of requests that start a trace (Envoy's random sampling, and the "
        "services' root sampler); a request continuing a trace follows its parent's decision.",
    )
    service_name_prefix: str = Field(
        "llmproxy-",
        pattern=r"^[A-Za-z0-9._\-]*$",
        description="Prefix of each service's `service.name` (llmproxy-router ...); Envoy's "
        "spans are named `envoy`.",
    )
    export_interval_s: float = Field(
        2.0,
        gt=0,
        le=60,
        description="How often finished spans are sent to the collector, in batches.",
    )
    export_timeout_s: float = Field(
        5.0, gt=0, le=60, description="Timeout of one export call to the collector."
    )
