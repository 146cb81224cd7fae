"""OpenTelemetry tracing of one service process, exported over OTLP/gRPC in batches.

configure_tracing() installs, once per process, a tracer provider and the instrumentation of
every gRPC call served or made (grpc.aio), every Redis command and every httpx request; W3C
`traceparent` is read from incoming metadata and written into outgoing calls. With no collector
configured nothing is installed: server_interceptors() is empty and the code's own spans (the
router's cache lookup) go to OpenTelemetry's no-op tracer.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import grpc
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.grpc import GrpcAioInstrumentorClient, aio_server_interceptor
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind
from opentelemetry.util.types import Attributes

from llmproxy.common.tracing_settings import TracingSettings

log = logging.getLogger(__name__)

# Health checks, reflection and Envoy's EDS stream are plumbing, not requests: no spans.
_UNTRACED_METHOD_PREFIXES = ("/grpc.", "/envoy.service.endpoint.", "/envoy.service.discovery.")


class RequestsOnlySampler(Sampler):
    """Root sampler: only a request a server receives starts a trace, at the configured ratio.

    A Redis command, HTTP or gRPC call made outside any trace is background work (usage
    flushes, health sync, outcome reports): sampling it would bury the request traces under a
    trace per tick. Its callees see "not sampled" in its traceparent and stay silent too.
    """

    def __init__(self, ratio: float) -> None:
        self._ratio = TraceIdRatioBased(ratio)

    def should_sample(  # noqa: PLR0917  (OpenTelemetry's Sampler interface)
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: trace.TraceState | None = None,
    ) -> SamplingResult:
        if kind is not SpanKind.SERVER:
            return SamplingResult(Decision.DROP, None, trace_state)
        return self._ratio.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )

    def get_description(self) -> str:
        return f"RequestsOnly{{{self._ratio.get_description()}}}"


class _Tracing:
    """What configure_tracing installed, to flush and shut down at exit."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        # opentelemetry-instrumentation-grpc has no type hints: hence the ignores below.
        self.interceptor: grpc.aio.ServerInterceptor = aio_server_interceptor(  # type: ignore[no-untyped-call]
            tracer_provider=provider, filter_=_traced_method
        )


_active: _Tracing | None = None


def _traced_method(details: Any) -> bool:
    return not str(details.method).startswith(_UNTRACED_METHOD_PREFIXES)


def configure_tracing(service: str, settings: TracingSettings) -> bool:
    """Trace this process as `<prefix><service>` when a collector is configured.

    Returns whether tracing is on. Must run before the service creates its gRPC channels
    (client instrumentation wraps grpc.aio.insecure_channel); a second call changes nothing.
    """
    global _active  # noqa: PLW0603  (one tracer provider per process, as OpenTelemetry's API has)
    if settings.otlp_endpoint is None or _active is not None:
        return _active is not None
    provider = TracerProvider(
        resource=Resource.create({SERVICE_NAME: f"{settings.service_name_prefix}{service}"}),
        sampler=ParentBased(root=RequestsOnlySampler(settings.sample_ratio)),
    )
    exporter = OTLPSpanExporter(
        endpoint=f"http://{settings.otlp_endpoint}",
        insecure=True,
        timeout=settings.export_timeout_s,
    )
    provider.add_span_processor(
        BatchSpanProcessor(
            exporter,
            schedule_delay_millis=settings.export_interval_s * 1000,
            export_timeout_millis=settings.export_timeout_s * 1000,
        )
    )
    trace.set_tracer_provider(provider)
    client_instrumentor = GrpcAioInstrumentorClient(filter_=_traced_method)  # type: ignore[no-untyped-call]
    client_instrumentor.instrument(tracer_provider=provider)
    HTTPXClientInstrumentor().instrument(tracer_provider=provider)
    RedisInstrumentor().instrument(tracer_provider=provider)
    _active = _Tracing(provider)
    log.info(
        "tracing on",
        extra={"otlp_endpoint": settings.otlp_endpoint, "sample_ratio": settings.sample_ratio},
    )
    return True


def server_interceptors() -> list[grpc.aio.ServerInterceptor]:
    """The interceptor that continues callers' traces in each RPC's span; none when off."""
    return [] if _active is None else [_active.interceptor]


def shutdown_tracing() -> None:
    """Export the spans still buffered and stop the exporter (at process exit)."""
    if _active is not None:
        _active.provider.shutdown()
