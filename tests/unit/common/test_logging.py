"""JSON log lines: service, fields passed with `extra`, and the trace they belong to."""

from __future__ import annotations

import json
import logging
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from llmproxy.common.logging import JsonFormatter


def _format(**extra: Any) -> dict[str, Any]:
    record = logging.LogRecord("llmproxy.test", logging.INFO, __file__, 1, "hello %s", ("x",), None)
    record.__dict__.update(extra)
    line: dict[str, Any] = json.loads(JsonFormatter("router").format(record))
    return line


def test_a_line_outside_any_trace_has_no_trace_ids() -> None:
    line = _format(model="m")
    assert line["msg"] == "hello x"
    assert (line["service"], line["level"], line["model"]) == ("router", "INFO", "m")
    assert "trace_id" not in line
    assert "span_id" not in line


def test_a_line_inside_a_span_carries_its_ids_in_hex() -> None:
    # A provider of the test's own: the process-wide one stays unset.
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("work") as span:
        line = _format()
    context = span.get_span_context()
    assert line["trace_id"] == f"{context.trace_id:032x}"
    assert line["span_id"] == f"{context.span_id:016x}"


def test_an_unsampled_trace_still_ties_lines_together() -> None:
    context = SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0x00F067AA0BA902B7,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.DEFAULT),
    )
    with trace.use_span(NonRecordingSpan(context)):
        line = _format()
    assert line["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert line["span_id"] == "00f067aa0ba902b7"
