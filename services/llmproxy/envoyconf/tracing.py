"""Envoy's OpenTelemetry tracing: what each listener's HCM gets, and the collector cluster.

With `tracing.otlp_endpoint` set, every HCM (client, control, egress) continues the caller's W3C
`traceparent` (or starts a trace, at `sample_ratio`) and Envoy puts the trace context into what
it sends on: ext_authz and ratelimit calls (each a child span of its own), the router, and the
egress call to a provider. Spans go over OTLP/gRPC to the `otel_collector` cluster. With no
endpoint nothing here is added, and the generated config is as without this module.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from llmproxy.common.tracing_settings import TracingSettings
from llmproxy.envoyconf.clusters import HTTP_OPTIONS, socket_address, typed

OTEL_CLUSTER = "otel_collector"
ENVOY_SERVICE_NAME = "envoy"
# Envoy's tracer sends its buffered spans every flush_interval_ms, or once min_flush_spans are
# waiting; both are runtime keys (defaults 5000 ms and 5), set from export_interval_s.
FLUSH_INTERVAL_KEY = "tracing.opentelemetry.flush_interval_ms"
MIN_FLUSH_SPANS_KEY = "tracing.opentelemetry.min_flush_spans"


def _host_port(endpoint: str) -> tuple[str, int]:
    host, _, port = endpoint.rpartition(":")
    return host.strip("[]"), int(port)


def _discovery_type(host: str) -> str:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return "STRICT_DNS"  # a collector's service name (compose, Kubernetes)
    return "STATIC"


def _parent_based_sampler(ratio: float) -> dict[str, Any]:
    # As the services sample: a traceparent's sampled flag is followed, and a request without
    # one starts a trace at the ratio.
    samplers = "envoy.extensions.tracers.opentelemetry.samplers.v3"
    ratio_sampler = {
        "name": "envoy.tracers.opentelemetry.samplers.trace_id_ratio_based",
        "typed_config": typed(
            f"{samplers}.TraceIdRatioBasedSamplerConfig",
            sampling_percentage={"numerator": round(ratio * 1_000_000), "denominator": "MILLION"},
        ),
    }
    return {
        "name": "envoy.tracers.opentelemetry.samplers.parent_based",
        "typed_config": typed(
            f"{samplers}.ParentBasedSamplerConfig", wrapped_sampler=ratio_sampler
        ),
    }


def hcm_tracing(settings: TracingSettings) -> dict[str, Any]:
    """The HCM fields that turn tracing on ({} when off), to merge into its typed_config."""
    if settings.otlp_endpoint is None:
        return {}
    provider = {
        "name": "envoy.tracers.opentelemetry",
        "typed_config": typed(
            "envoy.config.trace.v3.OpenTelemetryConfig",
            grpc_service={
                "envoy_grpc": {"cluster_name": OTEL_CLUSTER},
                "timeout": f"{settings.export_timeout_s}s",
            },
            service_name=ENVOY_SERVICE_NAME,
            sampler=_parent_based_sampler(settings.sample_ratio),
        ),
    }
    return {
        "tracing": {
            "provider": provider,
            # The sampler above decides; Envoy's own random sampling must not drop requests
            # before it (it would also drop those whose client asked for a trace).
            "random_sampling": {"value": 100},
            # A span of its own for each upstream call (router, provider), as a child of the
            # listener's span: its duration is the upstream's, apart from Envoy's filters.
            "spawn_upstream_span": True,
        },
        # Envoy would otherwise take the sampling decision from bits it packs into
        # x-request-id, and leave untraced any request whose client sent a non-UUID one.
        "request_id_extension": {
            "typed_config": typed(
                "envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig",
                pack_trace_reason=False,
                use_request_id_for_trace_sampling=False,
            )
        },
    }


def collector_clusters(settings: TracingSettings) -> list[dict[str, Any]]:
    """The OTLP/gRPC collector's cluster (HTTP/2), or none when tracing is off."""
    if settings.otlp_endpoint is None:
        return []
    host, port = _host_port(settings.otlp_endpoint)
    return [
        {
            "name": OTEL_CLUSTER,
            "type": _discovery_type(host),
            "connect_timeout": "1s",
            "typed_extension_protocol_options": {
                HTTP_OPTIONS: {
                    "@type": f"type.googleapis.com/{HTTP_OPTIONS}",
                    "explicit_http_config": {"http2_protocol_options": {}},
                }
            },
            "load_assignment": {
                "cluster_name": OTEL_CLUSTER,
                "endpoints": [
                    {"lb_endpoints": [{"endpoint": {"address": socket_address(host, port)}}]}
                ],
            },
        }
    ]


def tracing_runtime(settings: TracingSettings) -> dict[str, Any]:
    """Static runtime keys of Envoy's tracer: its flush interval follows export_interval_s."""
    if settings.otlp_endpoint is None:
        return {}
    return {
        FLUSH_INTERVAL_KEY: round(settings.export_interval_s * 1000),
        MIN_FLUSH_SPANS_KEY: 512,  # flush on the interval, not every few spans
    }
