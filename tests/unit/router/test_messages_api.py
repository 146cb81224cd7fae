"""POST /v1/messages through the servicers, read by the anthropic SDK (over a mock transport)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx2
import pytest
from google.api import httpbody_pb2

from llmproxy._gen.router.v1 import anthropic_pb2
from llmproxy.common.contract import STATUS_HEADER
from llmproxy.router.anthropic_api import AnthropicServicer
from llmproxy.router.providers import ProviderCallError, sse
from llmproxy.router.settings import ModelSettings, ModelTarget
from tests.unit.router.fakes import Context, answer, failure, stream_events
from tests.unit.router.servicers import OneTarget

MODEL = ModelSettings(name="m", targets=[ModelTarget(provider="p", model="up")])
HELLO = [{"role": "user", "content": "Hello"}]
WEATHER = {"name": "weather", "input_schema": {"type": "object"}}


def tool_answer() -> bytes:
    call = {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}
    message = {"role": "assistant", "content": None, "tool_calls": [call]}
    return json.dumps(
        {
            "id": "chatcmpl-t",
            "model": "up",
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 1},
        }
    ).encode()


def tool_stream() -> list[bytes]:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return sse.encode({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

    start = {"index": 0, "id": "call_1", "function": {"name": "weather", "arguments": ""}}
    return [
        chunk({"role": "assistant", "content": ""}),
        chunk({"tool_calls": [start]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
        chunk({}, "tool_calls"),
        sse.encode({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 4}}),
        sse.DONE,
    ]


class Gateway(OneTarget):
    """The router's Anthropic servicer, and an SDK client whose requests reach it."""

    def __init__(self, script: list[Any] | None = None, **settings: Any) -> None:
        super().__init__(MODEL, script, **settings)
        self.anthropic = AnthropicServicer(self.servicer)
        self.responses: list[httpx2.Response] = []

    async def reply(
        self, raw: bytes, headers: dict[str, str]
    ) -> tuple[dict[str, str], list[httpbody_pb2.HttpBody]]:
        context = Context(headers)
        request = anthropic_pb2.CreateMessageRequest(body=httpbody_pb2.HttpBody(data=raw))
        replies = [r async for r in self.anthropic.CreateMessage(request, context)]  # type: ignore[arg-type]
        return context.metadata, replies

    async def _handle(self, request: httpx2.Request) -> httpx2.Response:
        # What Envoy does: headers become metadata, x-llmproxy-status the HTTP status.
        headers = {k.lower(): v for k, v in request.headers.items()}
        metadata, replies = await self.reply(request.content, headers)
        status = int(metadata.pop(STATUS_HEADER, "200"))
        content = b"".join(r.data for r in replies)
        response = httpx2.Response(
            status,
            headers={"content-type": replies[0].content_type, **metadata},
            content=content,
        )
        self.responses.append(response)
        return response

    def client(self) -> anthropic.AsyncAnthropic:
        transport = httpx2.MockTransport(self._handle)
        return anthropic.AsyncAnthropic(
            api_key="sk-test",
            base_url="http://gateway.test",
            http_client=httpx2.AsyncClient(transport=transport),
            max_retries=0,
        )


@pytest.fixture
async def sdk() -> AsyncIterator[tuple[Gateway, anthropic.AsyncAnthropic]]:
    gateway = Gateway()
    async with gateway.client() as client:
        yield gateway, client


async def test_a_message_with_text_stop_reason_and_usage() -> None:
    gateway = Gateway([answer("Hi there", prompt=4, completion=2)])
    async with gateway.client() as client:
        message = await client.messages.create(
            model="m", max_tokens=20, system="Be brief.", messages=HELLO
        )
    assert message.type == "message"
    assert message.id.startswith("msg_")
    assert [(b.type, getattr(b, "text", None)) for b in message.content] == [("text", "Hi there")]
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (4, 2)
    sent = gateway.provider.calls[0]
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent["max_completion_tokens"] == 20


async def test_a_stream_accumulates_to_the_text_and_usage() -> None:
    gateway = Gateway([stream_events(["Hel", "lo"])])
    async with (
        gateway.client() as client,
        client.messages.stream(model="m", max_tokens=20, messages=HELLO) as stream,
    ):
        texts = [text async for text in stream.text_stream]
        message = await stream.get_final_message()
    assert texts == ["Hel", "lo"]
    assert message.content[0].type == "text"
    assert message.content[0].text == "Hello"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (3, 2)
    assert gateway.responses[0].headers["content-type"] == "text/event-stream"


async def test_keepalives_before_a_slow_first_token_do_not_disturb_the_sdk() -> None:
    gateway = Gateway([[0.05, *stream_events(["ok"])]], stream_keepalive_s=0.01)
    async with (
        gateway.client() as client,
        client.messages.stream(model="m", max_tokens=20, messages=HELLO) as stream,
    ):
        message = await stream.get_final_message()
    assert message.content[0].text == "ok"
    assert gateway.responses[0].content.startswith(b": keepalive\n\n")


async def test_a_tool_use_round_trip() -> None:
    gateway = Gateway([tool_answer(), answer("It is sunny")])
    async with gateway.client() as client:
        first = await client.messages.create(
            model="m", max_tokens=20, messages=HELLO, tools=[WEATHER]
        )
        (use,) = first.content
        assert use.type == "tool_use"
        assert (use.id, use.name, use.input) == ("call_1", "weather", {})
        assert first.stop_reason == "tool_use"
        result = {"type": "tool_result", "tool_use_id": use.id, "content": "Sunny"}
        second = await client.messages.create(
            model="m",
            max_tokens=20,
            tools=[WEATHER],
            messages=[
                *HELLO,
                {"role": "assistant", "content": [use.model_dump()]},
                {"role": "user", "content": [result]},
            ],
        )
    assert second.content[0].type == "text"
    assert second.content[0].text == "It is sunny"
    sent = gateway.provider.calls[1]["messages"]
    assert sent[-1] == {"role": "tool", "tool_call_id": "call_1", "content": "Sunny"}
    assert sent[-2]["tool_calls"][0]["id"] == "call_1"


async def test_a_streamed_tool_call_accumulates_its_input() -> None:
    gateway = Gateway([tool_stream()])
    async with (
        gateway.client() as client,
        client.messages.stream(model="m", max_tokens=20, messages=HELLO, tools=[WEATHER]) as stream,
    ):
        message = await stream.get_final_message()
    (use,) = message.content
    assert use.type == "tool_use"
    assert (use.name, use.input) == ("weather", {"city": "Paris"})
    assert message.stop_reason == "tool_use"
    assert message.usage.output_tokens == 4


async def test_a_repeated_deterministic_request_is_a_cache_hit_with_usage_recorded() -> None:
    gateway = Gateway()
    async with gateway.client() as client:
        for _ in range(2):
            await client.messages.create(
                model="m", max_tokens=20, messages=HELLO, extra_body={"temperature": 0}
            )
    assert [r.headers["x-cache"] for r in gateway.responses] == ["MISS", "HIT"]
    assert len(gateway.provider.calls) == 1
    assert [(model, usage.prompt_tokens) for _, model, usage in gateway.usage.records] == [("m", 3)]


async def test_an_unknown_model_is_not_found_in_anthropics_shape(
    sdk: tuple[Gateway, anthropic.AsyncAnthropic],
) -> None:
    _, client = sdk
    with pytest.raises(anthropic.NotFoundError) as raised:
        await client.messages.create(model="nope", max_tokens=5, messages=HELLO)
    assert raised.value.type == "not_found_error"
    assert "'nope'" in (raised.value.api_message or "")


async def test_a_bad_field_is_a_bad_request_naming_it(
    sdk: tuple[Gateway, anthropic.AsyncAnthropic],
) -> None:
    _, client = sdk
    with pytest.raises(anthropic.BadRequestError) as raised:
        await client.messages.create(
            model="m", max_tokens=5, messages=HELLO, extra_body={"top_k": 3}
        )
    assert raised.value.type == "invalid_request_error"
    assert (raised.value.api_message or "").startswith("top_k: ")
    assert raised.value.body == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": raised.value.api_message},
    }


async def test_no_provider_answering_is_overloaded() -> None:
    gateway = Gateway([failure(503)] * 3)
    async with gateway.client() as client:
        with pytest.raises(anthropic.ServiceUnavailableError) as raised:
            await client.messages.create(model="m", max_tokens=5, messages=HELLO)
    assert raised.value.type == "overloaded_error"


async def test_a_stream_broken_midway_raises_from_the_error_event() -> None:
    broken = ProviderCallError("reset", status=502, retryable=True)
    gateway = Gateway([[*stream_events(["a"])[:1], broken]])
    async with gateway.client() as client:
        with pytest.raises(anthropic.APIStatusError) as raised:
            async with client.messages.stream(model="m", max_tokens=5, messages=HELLO) as stream:
                await stream.get_final_message()
    assert raised.value.body == {
        "type": "error",
        "error": {"type": "api_error", "message": "The provider stream broke."},
    }


async def test_a_request_without_the_version_header_is_refused() -> None:
    gateway = Gateway()
    metadata, replies = await gateway.reply(json.dumps({"model": "m"}).encode(), {})
    assert metadata[STATUS_HEADER] == "400"
    assert json.loads(replies[0].data) == {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "anthropic-version: header is required",
        },
    }
    assert gateway.provider.calls == []
