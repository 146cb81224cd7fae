"""One trace per client request, across Envoy and every service, sent to an OTLP receiver.

The stack runs with `tracing.otlp_endpoint` pointing at a real OTLP/gRPC server started here;
the test sends a chat completion through Envoy and reads back the span tree.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from llmproxy.devstack.stack import Stack
from tests.e2e.conftest import create_key
from tests.harness import logs
from tests.harness.configs import stack_config_data, write_config
from tests.harness.otlp_receiver import OtlpReceiver, ReceivedSpan, otlp_receiver
from tests.harness.waiting import eventually

ENVOY = "envoy"
ROUTER, AUTHZ, RATELIMIT = "llmproxy-router", "llmproxy-authz", "llmproxy-ratelimit"


@dataclass
class TracedStack:
    """A stack exporting its spans to receiver, and an API key it accepts."""

    stack: Stack
    receiver: OtlpReceiver
    key: str

    @property
    def url(self) -> str:
        envoy = self.stack.config.envoy
        return f"http://{envoy.host}:{envoy.listener_port}/v1/chat/completions"


@contextmanager
def traced_stack(workdir: Path, **tracing: object) -> Iterator[TracedStack]:
    """A stack tracing to a receiver of its own, with these tracing settings."""
    with otlp_receiver() as receiver:
        settings = {"otlp_endpoint": receiver.endpoint, "export_interval_s": 0.2, **tracing}
        path, config = write_config(workdir, stack_config_data(tracing=settings))
        stack = Stack(config, path, workdir, os.environ)
        asyncio.run(stack.start(timeout_s=60))
        try:
            key = create_key(stack, tenant="e2e-tracing", user="pytest", name="tracing").secret
            yield TracedStack(stack, receiver, key)
        finally:
            stack.stop()


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TracedStack]:
    with traced_stack(tmp_path_factory.mktemp("tracing-stack")) as running:
        yield running


@pytest.fixture
def gateway(request: pytest.FixtureRequest, traced: TracedStack) -> TracedStack:
    logs.watch(request.node, *traced.stack.processes.values())
    return traced


def _chat(gateway: TracedStack, headers: dict[str, str]) -> httpx.Response:
    # temperature 0: cacheable, so the router looks the cache up (and misses: a fresh message).
    body = {
        "model": "gpt-4o-mini",
        "temperature": 0,
        "messages": [{"role": "user", "content": f"trace me {secrets.token_hex(8)}"}],
    }
    headers = {"authorization": f"Bearer {gateway.key}", **headers}
    response = httpx.post(gateway.url, json=body, headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    return response


def _tree_problems(spans: list[ReceivedSpan], root_parent: str) -> list[str]:
    """What keeps spans from being one tree whose root's parent is root_parent."""
    ids = {s.span_id for s in spans}
    roots = [s for s in spans if s.parent_span_id == root_parent]
    orphans = [s for s in spans if s.parent_span_id != root_parent and s.parent_span_id not in ids]
    problems = []
    if len(roots) != 1:
        problems.append(f"{len(roots)} roots under {root_parent!r}: {roots}")
    if orphans:
        problems.append(f"spans whose parent was not received: {orphans}")
    if len(ids) != len(spans):
        problems.append("duplicate span ids")
    return problems


def _has(spans: list[ReceivedSpan], service: str, kind: str, name_part: str = "") -> bool:
    return any(s.service == service and s.kind == kind and name_part in s.name for s in spans)


def _complete(spans: list[ReceivedSpan], root_parent: str) -> bool:
    """Every part of the request has reported, and the spans form one tree."""
    return (
        _has(spans, ENVOY, "SPAN_KIND_SERVER")
        and _has(spans, AUTHZ, "SPAN_KIND_SERVER", "Authorization/Check")
        and _has(spans, RATELIMIT, "SPAN_KIND_SERVER", "ShouldRateLimit")
        and _has(spans, ROUTER, "SPAN_KIND_SERVER", "CreateChatCompletion")
        and _has(spans, ROUTER, "SPAN_KIND_INTERNAL", "cache lookup")
        and _has(spans, ROUTER, "SPAN_KIND_CLIENT", "POST")
        and sum(s.service == ENVOY and s.kind == "SPAN_KIND_SERVER" for s in spans) >= 2
        and not _tree_problems(spans, root_parent)
    )


async def test_a_client_traceparent_is_continued_by_every_part(gateway: TracedStack) -> None:
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    _chat(gateway, {"traceparent": f"00-{trace_id}-{parent_id}-01"})

    async def spans() -> list[ReceivedSpan]:
        return gateway.receiver.spans(trace_id)

    found = await eventually(
        spans, lambda s: _complete(s, parent_id), what="the trace complete", timeout_s=20
    )
    assert not _tree_problems(found, parent_id)
    (root,) = [s for s in found if s.parent_span_id == parent_id]
    assert (root.service, root.kind, root.name) == (ENVOY, "SPAN_KIND_SERVER", "ingress")
    by_id = {s.span_id: s for s in found}

    def one(service: str, name_part: str, kind: str = "") -> ReceivedSpan:
        (span,) = [
            s for s in found if s.service == service and name_part in s.name and kind in s.kind
        ]
        return span

    def parent(span: ReceivedSpan) -> ReceivedSpan:
        return by_id[span.parent_span_id]

    # Envoy calls authz and ratelimit with the trace context, each call a span of its own.
    authz = one(AUTHZ, "Authorization/Check")
    assert parent(authz) == one(ENVOY, "Authorization.Check egress")
    assert parent(parent(authz)) == root
    ratelimit = one(RATELIMIT, "RateLimitService/ShouldRateLimit")
    assert parent(ratelimit) == one(ENVOY, "ShouldRateLimit egress")
    assert parent(parent(ratelimit)) == root
    # The router's RPC runs under Envoy's upstream span for it.
    rpc = one(ROUTER, "CreateChatCompletion", "SERVER")
    assert parent(rpc) == one(ENVOY, "router llmproxy_router egress")
    assert parent(parent(rpc)) == root
    # The cache lookup (a miss: a fresh question) and its Redis command are inside the RPC.
    lookup = one(ROUTER, "cache lookup")
    assert parent(lookup) == rpc
    assert lookup.attributes["llmproxy.cache.hit"] is False
    assert parent(one(ROUTER, "HGETALL")) == lookup
    # The provider call: httpx's span, continued by Envoy's egress listener and its upstream.
    provider_call = one(ROUTER, "POST", "CLIENT")
    assert parent(provider_call) == rpc
    egress = [s for s in found if s.service == ENVOY and s.parent_span_id == provider_call.span_id]
    assert [s.name for s in egress] == ["ingress"]
    assert parent(one(ENVOY, "router provider_demo egress")) == egress[0]


async def test_a_request_without_traceparent_still_makes_one_trace(gateway: TracedStack) -> None:
    # Not a UUID: Envoy must not take its sampling decision from the client's x-request-id.
    request_id = f"no-traceparent-{secrets.token_hex(8)}"
    _chat(gateway, {"x-request-id": request_id})

    async def trace_of_request() -> list[ReceivedSpan]:
        roots = [
            s
            for s in gateway.receiver.spans()
            if s.service == ENVOY and s.attributes.get("guid:x-request-id") == request_id
        ]
        return gateway.receiver.spans(roots[0].trace_id) if roots else []

    spans = await eventually(
        trace_of_request, lambda s: _complete(s, ""), what="the trace complete", timeout_s=20
    )
    (root,) = [s for s in spans if not s.parent_span_id]
    assert (root.service, root.kind, root.name) == (ENVOY, "SPAN_KIND_SERVER", "ingress")


async def test_router_logs_carry_the_trace_id(gateway: TracedStack) -> None:
    trace_id = secrets.token_hex(16)
    _chat(gateway, {"traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"})
    log_path = gateway.stack.workdir / "logs" / "router.log"

    async def answered_lines() -> list[dict[str, object]]:
        lines = [json.loads(line) for line in log_path.read_text().splitlines() if "{" in line]
        return [line for line in lines if line.get("trace_id") == trace_id]

    lines = await eventually(answered_lines, what="log lines with the trace id", timeout_s=10)
    assert any(line["msg"] == "answered" for line in lines), lines
    assert all(len(str(line["span_id"])) == 16 for line in lines)


@pytest.fixture
def unsampled(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TracedStack]:
    """A stack of its own with sample_ratio 0."""
    with traced_stack(tmp_path, sample_ratio=0) as running:
        logs.watch(request.node, *running.stack.processes.values())
        yield running


async def test_a_client_asking_for_a_trace_gets_one_whatever_the_ratio(
    unsampled: TracedStack,
) -> None:
    """sample_ratio 0: requests start no trace, but a sampled traceparent is followed."""
    _chat(unsampled, {})
    sent: set[str] = set()

    async def complete_trace() -> tuple[str, list[ReceivedSpan]] | None:
        # One traced request, until every part has reported. A rate limit check that failed
        # open (Envoy's call to it answered UNAVAILABLE on a loaded machine) leaves that part
        # out of its trace; the next request's trace is then the one to look at.
        trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
        sent.add(trace_id)
        _chat(unsampled, {"traceparent": f"00-{trace_id}-{parent_id}-01"})
        try:
            found = await eventually(
                lambda: unsampled.receiver.spans(trace_id),
                lambda s: _complete(s, parent_id),
                what="the trace complete",
                timeout_s=10,
            )
        except AssertionError:
            return None
        assert not _tree_problems(found, parent_id)
        return trace_id, found

    traced = [await complete_trace() for _ in range(3)]
    # A witness: each process exports its spans in the order they end, so once a later trace
    # is complete, anything the untraced request made is in too.
    assert sum(t is not None for t in traced) >= 2, traced
    assert {s.trace_id for s in unsampled.receiver.spans()} <= sent
