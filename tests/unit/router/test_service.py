"""The OpenAI servicer with providers faked by respx: ordering, failover, error mapping."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import respx

from llmproxy._gen.router.v1 import openai_pb2
from llmproxy.router.providers import Provider, ProviderClient
from llmproxy.router.service import OpenAIServicer
from llmproxy.router.settings import ModelTarget

pytestmark = pytest.mark.unit

PRIMARY = "http://primary.invalid/v1"
BACKUP = "http://backup.invalid/v1"
ANSWER = {"object": "chat.completion", "choices": [{"message": {"content": "ok"}}]}


class FakeContext:
    """Records what the servicer sends as initial metadata."""

    def __init__(self) -> None:
        self.metadata: dict[str, str] = {}

    async def send_initial_metadata(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.metadata.update(metadata)


@pytest.fixture
async def servicer() -> AsyncIterator[OpenAIServicer]:
    async with httpx.AsyncClient() as http:
        clients = {
            "primary": ProviderClient(http, Provider("primary", PRIMARY, "sk-primary", 5.0)),
            "backup": ProviderClient(http, Provider("backup", BACKUP, None, 5.0)),
        }
        routes = {
            "m": [
                ModelTarget(provider="primary", model="up-m"),
                ModelTarget(provider="backup", model="up-m2"),
            ]
        }
        yield OpenAIServicer(routes, clients)


async def call(servicer: OpenAIServicer, body: Any) -> tuple[FakeContext, list[Any]]:
    context = FakeContext()
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = openai_pb2.CreateChatCompletionRequest(body={"data": raw})
    replies = [r async for r in servicer.CreateChatCompletion(request, context)]  # type: ignore[arg-type]
    return context, replies


CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@respx.mock
async def test_first_target_answers_with_its_upstream_model_and_key(
    servicer: OpenAIServicer,
) -> None:
    route = respx.post(f"{PRIMARY}/chat/completions").respond(200, json=ANSWER)
    context, replies = await call(servicer, CHAT)
    assert context.metadata == {"x-llmproxy-provider": "primary"}
    assert json.loads(replies[0].data) == ANSWER
    sent = route.calls.last.request
    assert json.loads(sent.content)["model"] == "up-m"
    assert sent.headers["authorization"] == "Bearer sk-primary"


@pytest.mark.parametrize("failure", [500, 503, 429, httpx.ConnectError("down")])
@respx.mock
async def test_retryable_failures_fail_over_to_the_next_target(
    servicer: OpenAIServicer, failure: int | Exception
) -> None:
    primary = respx.post(f"{PRIMARY}/chat/completions")
    if isinstance(failure, int):
        primary.respond(failure, json={"error": {"message": "x"}})
    else:
        primary.side_effect = failure
    backup = respx.post(f"{BACKUP}/chat/completions").respond(200, json=ANSWER)
    context, replies = await call(servicer, CHAT)
    assert context.metadata == {"x-llmproxy-provider": "backup"}
    assert json.loads(replies[0].data) == ANSWER
    assert "authorization" not in backup.calls.last.request.headers


@respx.mock
async def test_a_provider_4xx_about_the_request_is_passed_through(
    servicer: OpenAIServicer,
) -> None:
    error = {"error": {"message": "max_tokens too large", "type": "invalid_request_error"}}
    respx.post(f"{PRIMARY}/chat/completions").respond(400, json=error)
    backup = respx.post(f"{BACKUP}/chat/completions").respond(200, json=ANSWER)
    context, replies = await call(servicer, CHAT)
    assert context.metadata == {"x-llmproxy-status": "400"}
    assert json.loads(replies[0].data) == error
    assert not backup.called


@pytest.mark.parametrize(
    ("failure", "status"),
    [(httpx.ConnectError("down"), "503"), (httpx.ReadTimeout("slow"), "504"), (502, "502")],
)
@respx.mock
async def test_all_targets_failing_maps_to_a_gateway_status(
    servicer: OpenAIServicer, failure: int | Exception, status: str
) -> None:
    for base in (PRIMARY, BACKUP):
        route = respx.post(f"{base}/chat/completions")
        if isinstance(failure, int):
            route.respond(failure)
        else:
            route.side_effect = failure
    context, replies = await call(servicer, CHAT)
    assert context.metadata == {"x-llmproxy-status": status}
    error = json.loads(replies[0].data)["error"]
    assert error["type"] == "upstream_error"
    assert "No provider could answer" in error["message"]


@respx.mock
async def test_stream_relays_chunks_and_fails_over_before_the_first_byte(
    servicer: OpenAIServicer,
) -> None:
    respx.post(f"{PRIMARY}/chat/completions").respond(503)
    sse = b'data: {"choices": []}\n\ndata: [DONE]\n\n'
    respx.post(f"{BACKUP}/chat/completions").respond(
        200, content=sse, headers={"content-type": "text/event-stream"}
    )
    context, replies = await call(servicer, {**CHAT, "stream": True})
    assert context.metadata == {"x-llmproxy-provider": "backup"}
    assert b"".join(r.data for r in replies) == sse
    assert {r.content_type for r in replies} == {"text/event-stream"}


@respx.mock
async def test_stream_broken_midway_ends_with_an_error_event(servicer: OpenAIServicer) -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield b'data: {"choices": []}\n\n'
        raise httpx.ReadError("connection lost")

    respx.post(f"{PRIMARY}/chat/completions").respond(200, stream=broken())  # type: ignore[arg-type]
    _, replies = await call(servicer, {**CHAT, "stream": True})
    assert replies[0].data == b'data: {"choices": []}\n\n'
    last = replies[-1].data.decode()
    assert last.startswith("data: ")
    assert json.loads(last.removeprefix("data: "))["error"]["type"] == "upstream_error"


async def test_unknown_model_is_404_without_a_provider_call(servicer: OpenAIServicer) -> None:
    with respx.mock(assert_all_called=False) as mock:
        context, replies = await call(servicer, {**CHAT, "model": "other"})
        assert not mock.calls
    assert context.metadata == {"x-llmproxy-status": "404"}
    assert json.loads(replies[0].data)["error"]["code"] == "model_not_found"


async def test_invalid_json_is_400(servicer: OpenAIServicer) -> None:
    context, replies = await call(servicer, b"\xff\xfe")
    assert context.metadata == {"x-llmproxy-status": "400"}
    assert "not valid JSON" in json.loads(replies[0].data)["error"]["message"]
