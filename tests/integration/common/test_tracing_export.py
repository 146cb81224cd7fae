"""A service process exports its spans over OTLP, and a collector that is down costs nothing."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest

from llmproxy._gen.router.v1 import openai_pb2, openai_pb2_grpc
from llmproxy.devstack.process import ManagedProcess
from tests.harness.configs import stack_config_data
from tests.harness.otlp_receiver import ReceivedSpan, otlp_receiver
from tests.harness.ports import free_port
from tests.harness.router_process import router_with_fake_provider
from tests.harness.waiting import eventually


@asynccontextmanager
async def router_process(
    request: pytest.FixtureRequest, tmp_path: Path, redis_url: str, otlp_endpoint: str
) -> AsyncIterator[tuple[ManagedProcess, int]]:
    """The router (calling a fake provider directly) tracing to otlp_endpoint."""
    data = stack_config_data(
        redis={"url": redis_url},
        tracing={"otlp_endpoint": otlp_endpoint, "export_interval_s": 0.2, "export_timeout_s": 1},
    )
    async with router_with_fake_provider(request, tmp_path, data) as (router, config):
        yield router, config.services.router.grpc_port


async def _chat(port: int, metadata: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    body = json.dumps(
        {
            "model": "gpt-4o-mini",
            "temperature": 0,
            "messages": [{"role": "user", "content": secrets.token_hex(8)}],
        }
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = openai_pb2_grpc.OpenAIServiceStub(channel).CreateChatCompletion(
            openai_pb2.CreateChatCompletionRequest(body={"data": body.encode()}),
            metadata=metadata,
            timeout=20,
        )
        chunks = [chunk async for chunk in call]
    answer: dict[str, Any] = json.loads(chunks[0].data)
    return answer


async def test_a_service_process_exports_the_spans_of_a_call(
    request: pytest.FixtureRequest, tmp_path: Path, redis_process: str
) -> None:
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    with otlp_receiver() as receiver:
        async with router_process(request, tmp_path, redis_process, receiver.endpoint) as (
            router,
            port,
        ):
            await _chat(port, (("traceparent", f"00-{trace_id}-{parent_id}-01"),))

            async def spans() -> list[ReceivedSpan]:
                return receiver.spans(trace_id)

            found = await eventually(spans, lambda s: len(s) >= 4, what="four spans", timeout_s=10)
            assert router.stop(grace_s=10) == 0
    names = {(s.kind, s.name) for s in found}
    assert ("SPAN_KIND_SERVER", "/llmproxy.router.v1.OpenAIService/CreateChatCompletion") in names
    assert ("SPAN_KIND_INTERNAL", "cache lookup") in names
    assert ("SPAN_KIND_CLIENT", "HGETALL") in names
    assert ("SPAN_KIND_CLIENT", "POST") in names  # the provider call
    assert {s.service for s in found} == {"llmproxy-router"}
    (rpc,) = [s for s in found if s.kind == "SPAN_KIND_SERVER"]
    assert rpc.parent_span_id == parent_id
    # Background work (usage flushes, health reports) made no trace of its own.
    assert {s.trace_id for s in receiver.spans()} == {trace_id}


async def test_a_collector_that_is_down_changes_nothing_for_clients(
    request: pytest.FixtureRequest, tmp_path: Path, redis_process: str
) -> None:
    nowhere = f"127.0.0.1:{free_port()}"
    async with router_process(request, tmp_path, redis_process, nowhere) as (router, port):
        answer = await _chat(port, ())
        assert answer["choices"][0]["message"]["content"].startswith("This is a fake answer")
        # Exit stays prompt and clean: the last export gives up after export_timeout_s.
        assert router.stop(grace_s=10) == 0
