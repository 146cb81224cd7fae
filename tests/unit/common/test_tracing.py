"""Tracing configuration and the sampler that keeps background work out of the traces."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision, ParentBased
from opentelemetry.trace import SpanKind

from llmproxy.common.errors import ConfigError
from llmproxy.common.tracing import RequestsOnlySampler, configure_tracing, server_interceptors
from llmproxy.common.tracing_settings import TracingSettings
from llmproxy.config import load_config

TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C


@pytest.mark.parametrize(
    ("kind", "ratio", "decision"),
    [
        (SpanKind.SERVER, 1.0, Decision.RECORD_AND_SAMPLE),
        (SpanKind.SERVER, 0.0, Decision.DROP),
        (SpanKind.CLIENT, 1.0, Decision.DROP),
        (SpanKind.INTERNAL, 1.0, Decision.DROP),
    ],
)
def test_only_requests_start_traces(kind: SpanKind, ratio: float, decision: Decision) -> None:
    result = RequestsOnlySampler(ratio).should_sample(None, TRACE_ID, "span", kind)
    assert result.decision is decision


def _provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(root=RequestsOnlySampler(1.0)))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def test_calls_inside_a_request_are_traced_and_background_calls_are_not() -> None:
    provider, exporter = _provider()
    tracer = provider.get_tracer("test")
    with (
        tracer.start_as_current_span("rpc", kind=SpanKind.SERVER),
        tracer.start_as_current_span("HGETALL", kind=SpanKind.CLIENT),
    ):
        pass
    # A callee of background work inherits "not sampled" and stays silent too.
    with (
        tracer.start_as_current_span("usage flush", kind=SpanKind.CLIENT),
        tracer.start_as_current_span("nested", kind=SpanKind.SERVER) as nested,
    ):
        assert not nested.get_span_context().trace_flags.sampled
    assert sorted(s.name for s in exporter.get_finished_spans()) == ["HGETALL", "rpc"]


def test_a_sampled_remote_parent_is_followed_whatever_the_ratio() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=ParentBased(root=RequestsOnlySampler(0.0)))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    parent = trace.NonRecordingSpan(
        trace.SpanContext(TRACE_ID, 0x00F067AA0BA902B7, True, trace.TraceFlags(1))
    )
    context = trace.set_span_in_context(parent)
    provider.get_tracer("test").start_span("rpc", context, kind=SpanKind.SERVER).end()
    (span,) = exporter.get_finished_spans()
    assert span.context is not None
    assert span.context.trace_id == TRACE_ID


def test_without_a_collector_nothing_is_installed() -> None:
    assert configure_tracing("router", TracingSettings()) is False
    assert server_interceptors() == []


def test_the_endpoint_comes_from_the_file_or_the_environment(tmp_config: object) -> None:
    config = load_config(
        str(tmp_config), environ={"LLMPROXY__TRACING__OTLP_ENDPOINT": "otel-collector:4317"}
    )
    assert config.tracing.otlp_endpoint == "otel-collector:4317"
    assert config.tracing.sample_ratio == 1.0
    assert load_config(str(tmp_config), environ={}).tracing.otlp_endpoint is None


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("OTLP_ENDPOINT", "http://collector:4317", "tracing.otlp_endpoint"),
        ("OTLP_ENDPOINT", "collector", "tracing.otlp_endpoint"),
        ("SAMPLE_RATIO", "1.5", "tracing.sample_ratio"),
        ("EXPORT_INTERVAL_S", "0", "tracing.export_interval_s"),
        ("BOGUS", "1", "tracing.bogus"),
    ],
)
def test_bad_tracing_settings_are_refused_by_name(
    tmp_config: object, variable: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(str(tmp_config), environ={f"LLMPROXY__TRACING__{variable}": value})
