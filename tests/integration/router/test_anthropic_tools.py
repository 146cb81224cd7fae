"""Tool calls through the router's Anthropic adapter to the fake Anthropic API, both ways, and
the Messages API served from that provider."""

from __future__ import annotations

import json
from typing import Any

from google.api import httpbody_pb2

from llmproxy._gen.router.v1 import anthropic_pb2, anthropic_pb2_grpc
from llmproxy.router.providers import sse
from tests.integration.router.conftest import Router

QUESTION = [{"role": "user", "content": "Weather in Paris?"}]
TOOLS = [
    {
        "type": "function",
        "function": {"name": "weather", "parameters": {"type": "object", "properties": {}}},
    }
]


async def test_a_tool_call_round_trip(router: Router) -> None:
    metadata, replies = await router.chat({"model": "claude", "messages": QUESTION, "tools": TOOLS})
    assert metadata["x-llmproxy-provider"] == "claude"
    answer = json.loads(replies[0])
    assert answer["choices"][0]["finish_reason"] == "tool_calls"
    (call,) = answer["choices"][0]["message"]["tool_calls"]
    assert call["id"].startswith("toolu_")
    assert call["function"]["name"] == "weather"
    assert json.loads(call["function"]["arguments"]) == {"query": "Weather in Paris?"}

    # The fake checks the result answers the call by its id, as Anthropic does.
    turns = [
        *QUESTION,
        answer["choices"][0]["message"],
        {"role": "tool", "tool_call_id": call["id"], "content": "Sunny"},
    ]
    _, replies = await router.chat({"model": "claude", "messages": turns, "tools": TOOLS})
    final = json.loads(replies[0])["choices"][0]
    assert final["finish_reason"] == "stop"
    assert final["message"]["content"] == "This is a fake answer to: Weather in Paris?"


async def test_a_streamed_tool_call_arrives_as_tool_call_deltas(router: Router) -> None:
    _, events = await router.chat(
        {
            "model": "claude",
            "messages": QUESTION,
            "tools": TOOLS,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    )
    assert events[-1] == sse.DONE
    payloads = [sse.data_json(e) for e in events[:-1]]
    calls = [
        c for p in payloads if p["choices"] for c in p["choices"][0]["delta"].get("tool_calls", [])
    ]
    assert calls[0]["function"]["name"] == "weather"
    assert {c["index"] for c in calls} == {0}
    arguments = "".join(c["function"]["arguments"] for c in calls)
    assert json.loads(arguments) == {"query": "Weather in Paris?"}
    finish = [p["choices"][0]["finish_reason"] for p in payloads if p["choices"]]
    assert finish[-1] == "tool_calls"
    assert payloads[-1]["usage"]["completion_tokens"] > 0


async def test_json_mode_is_a_400_naming_the_feature(router: Router) -> None:
    metadata, replies = await router.chat(
        {"model": "claude", "messages": QUESTION, "response_format": {"type": "json_object"}}
    )
    assert metadata["x-llmproxy-status"] == "400"
    message = json.loads(replies[0])["error"]["message"]
    assert "JSON mode (response_format 'json_object')" in message
    assert await router.provider.requests("/v1/messages") == 0


async def message(router: Router, body: dict[str, Any]) -> list[bytes]:
    stub = anthropic_pb2_grpc.AnthropicServiceStub(router.channel)
    request = anthropic_pb2.CreateMessageRequest(
        body=httpbody_pb2.HttpBody(data=json.dumps(body).encode())
    )
    call = stub.CreateMessage(request, metadata=(("anthropic-version", "2023-06-01"),))
    return [reply.data async for reply in call]


async def test_the_messages_api_served_from_an_anthropic_provider(router: Router) -> None:
    tools = [{"name": "weather", "input_schema": {"type": "object"}}]
    body = {"model": "claude", "max_tokens": 50, "messages": QUESTION, "tools": tools}
    (first,) = await message(router, body)
    use = json.loads(first)["content"][0]
    assert (use["type"], use["name"], use["input"]) == (
        "tool_use",
        "weather",
        {"query": "Weather in Paris?"},
    )
    result = {"type": "tool_result", "tool_use_id": use["id"], "content": "Sunny"}
    turns = [
        *QUESTION,
        {"role": "assistant", "content": [use]},
        {"role": "user", "content": [result]},
    ]
    events = b"".join(await message(router, {**body, "messages": turns, "stream": True}))
    names = [sse.field(e, b"event") for e in sse.split(events)]
    assert names[0] == b"message_start"
    assert names[-1] == b"message_stop"
    text = "".join(
        sse.data_json(e)["delta"]["text"]
        for e in sse.split(events)
        if sse.field(e, b"event") == b"content_block_delta"
    )
    assert text == "This is a fake answer to: Weather in Paris?"
