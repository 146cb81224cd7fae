"""An OTLP/gRPC trace receiver for tests: a real gRPC server keeping every span it is sent."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2


@dataclass(frozen=True)
class ReceivedSpan:
    """One exported span, ids in lowercase hex ("" for no parent)."""

    service: str
    name: str
    kind: str  # SPAN_KIND_SERVER, SPAN_KIND_CLIENT, ...
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any] = field(hash=False, compare=False)


def _value(value: common_pb2.AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


def _attributes(items: Any) -> dict[str, Any]:
    return {item.key: _value(item.value) for item in items}


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.spans: list[ReceivedSpan] = []

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        received = []
        for resource_spans in request.resource_spans:
            service = str(_attributes(resource_spans.resource.attributes).get("service.name", ""))
            for scope_spans in resource_spans.scope_spans:
                received.extend(
                    ReceivedSpan(
                        service=service,
                        name=span.name,
                        kind=trace_pb2.Span.SpanKind.Name(span.kind),
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        attributes=_attributes(span.attributes),
                    )
                    for span in scope_spans.spans
                )
        with self.lock:
            self.spans.extend(received)
        return trace_service_pb2.ExportTraceServiceResponse()


class OtlpReceiver:
    """The spans received so far, and where to send them (host:port)."""

    def __init__(self, endpoint: str, service: _TraceService) -> None:
        self.endpoint = endpoint
        self._service = service

    def spans(self, trace_id: str | None = None) -> list[ReceivedSpan]:
        """Every span received, or those of one trace."""
        with self._service.lock:
            spans = list(self._service.spans)
        return [s for s in spans if trace_id is None or s.trace_id == trace_id]


@contextmanager
def otlp_receiver(host: str = "127.0.0.1") -> Iterator[OtlpReceiver]:
    """Serve OTLP/gRPC TraceService/Export on a free port until the block ends."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    service = _TraceService()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(service, server)
    port = server.add_insecure_port(f"{host}:0")
    server.start()
    try:
        yield OtlpReceiver(f"{host}:{port}", service)
    finally:
        server.stop(grace=None)
