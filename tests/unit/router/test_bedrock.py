"""Bedrock's Converse API in OpenAI's format and back, its event streams and its errors."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from botocore.credentials import Credentials

from llmproxy.fakeprovider import bedrock as fake
from llmproxy.router.providers import client_for, sse
from llmproxy.router.providers.base import Provider, ProviderCallError, UnsupportedError
from llmproxy.router.providers.bedrock import bedrock_failure, model_path
from llmproxy.router.providers.converse import (
    ChunkWriter,
    to_chat_completion,
    to_converse_request,
)

PROVIDER = Provider(
    "br",
    "bedrock",
    "http://bedrock.test",
    None,
    5.0,
    origin_url="http://bedrock.test",
    region="us-east-1",
    aws_credentials=Credentials(fake.TEST_ACCESS_KEY_ID, fake.TEST_SECRET_ACCESS_KEY),
)
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "weather",
            "description": "Weather of a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


def test_request_maps_system_messages_options_and_tools() -> None:
    request = to_converse_request(
        {
            "model": "m",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "weather in Oslo?"}]},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "weather", "arguments": '{"city": "Oslo"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "rain"},
                {"role": "user", "content": "and tomorrow?"},
            ],
            "max_tokens": 20,
            "temperature": 0.5,
            "top_p": 0.9,
            "stop": "END",
            "tools": TOOLS,
            "tool_choice": "required",
        }
    )
    assert request["system"] == [{"text": "be brief"}]
    assert request["inferenceConfig"] == {
        "maxTokens": 20,
        "temperature": 0.5,
        "topP": 0.9,
        "stopSequences": ["END"],
    }
    assert [m["role"] for m in request["messages"]] == ["user", "assistant", "user"]
    assert request["messages"][1]["content"] == [
        {"toolUse": {"toolUseId": "call_1", "name": "weather", "input": {"city": "Oslo"}}}
    ]
    # The tool's answer and the next question are one user turn: Converse wants alternation.
    assert request["messages"][2]["content"] == [
        {"toolResult": {"toolUseId": "call_1", "content": [{"text": "rain"}]}},
        {"text": "and tomorrow?"},
    ]
    spec = request["toolConfig"]["tools"][0]["toolSpec"]
    assert spec["name"] == "weather"
    assert spec["inputSchema"]["json"]["properties"]["city"] == {"type": "string"}
    assert request["toolConfig"]["toolChoice"] == {"any": {}}
    assert "model" not in request


def test_named_tool_choice_and_none() -> None:
    named = to_converse_request(
        {
            "messages": [{"role": "user", "content": "hi"}],
            "tools": TOOLS,
            "tool_choice": {"type": "function", "function": {"name": "weather"}},
        }
    )
    assert named["toolConfig"]["toolChoice"] == {"tool": {"name": "weather"}}
    none = to_converse_request(
        {"messages": [{"role": "user", "content": "hi"}], "tools": TOOLS, "tool_choice": "none"}
    )
    assert "toolConfig" not in none


def test_data_url_images_become_image_blocks() -> None:
    request = to_converse_request(
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
                    ],
                }
            ]
        }
    )
    image = request["messages"][0]["content"][0]["image"]
    assert image == {"format": "png", "source": {"bytes": "AAAA"}}


@pytest.mark.parametrize(
    ("extra", "feature"),
    [
        ({"response_format": {"type": "json_object"}}, "JSON mode"),
        ({"response_format": {"type": "json_schema", "json_schema": {}}}, "JSON mode"),
        ({"n": 2}, "n > 1"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "https://x/a.png"}}],
                    }
                ]
            },
            "image_url",
        ),
        ({"messages": [{"role": "function", "content": "x"}]}, "'function' messages"),
    ],
)
def test_unsupported_features_are_400s_naming_them(extra: dict[str, Any], feature: str) -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], **extra}
    with pytest.raises(UnsupportedError) as caught:
        to_converse_request(body)
    assert caught.value.status == 400
    assert feature in str(caught.value)


def test_answer_with_text_and_usage() -> None:
    answer = {
        "output": {"message": {"role": "assistant", "content": [{"text": "Hel"}, {"text": "lo"}]}},
        "stopReason": "max_tokens",
        "usage": {"inputTokens": 7, "outputTokens": 2, "totalTokens": 9},
    }
    completion = to_chat_completion(answer, "m", "req-1")
    assert completion["id"] == "chatcmpl-req-1"
    assert completion["model"] == "m"
    assert completion["choices"][0]["message"] == {"role": "assistant", "content": "Hello"}
    assert completion["choices"][0]["finish_reason"] == "length"
    assert completion["usage"] == {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}


def test_answer_with_tool_use() -> None:
    answer = {
        "output": {
            "message": {
                "role": "assistant",
                "content": [
                    {"toolUse": {"toolUseId": "t1", "name": "weather", "input": {"city": "Oslo"}}}
                ],
            }
        },
        "stopReason": "tool_use",
        "usage": {"inputTokens": 7, "outputTokens": 5},
    }
    choice = to_chat_completion(answer, "m")["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    call = choice["message"]["tool_calls"][0]
    assert call["id"] == "t1"
    assert call["function"]["name"] == "weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Oslo"}


@pytest.mark.parametrize(
    ("reason", "finish"),
    [("end_turn", "stop"), ("stop_sequence", "stop"), ("guardrail_intervened", "content_filter")],
)
def test_stop_reasons(reason: str, finish: str) -> None:
    answer = {"output": {"message": {"content": [{"text": "x"}]}}, "stopReason": reason}
    assert to_chat_completion(answer, "m")["choices"][0]["finish_reason"] == finish


def _payloads(chunks: list[bytes]) -> list[dict[str, Any]]:
    return [sse.data_json(c) for c in chunks if c != sse.DONE]


def test_stream_events_become_chunks_with_tool_calls_and_usage() -> None:
    writer = ChunkWriter("m", "req")
    chunks: list[bytes] = []
    events = [
        ("messageStart", {"role": "assistant"}),
        ("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": "Let me look"}}),
        ("contentBlockStop", {"contentBlockIndex": 0}),
        (
            "contentBlockStart",
            {"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "t1", "name": "weather"}}},
        ),
        ("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": '{"ci'}}}),
        ("contentBlockDelta", {"contentBlockIndex": 1, "delta": {"toolUse": {"input": 'ty": 1}'}}}),
        ("messageStop", {"stopReason": "tool_use"}),
        ("metadata", {"usage": {"inputTokens": 3, "outputTokens": 4}}),
    ]
    for kind, event in events:
        chunks.extend(writer.translate(kind, event))
    assert chunks[-1] == sse.DONE
    payloads = _payloads(chunks)
    assert payloads[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert payloads[1]["choices"][0]["delta"] == {"content": "Let me look"}
    start = payloads[2]["choices"][0]["delta"]["tool_calls"][0]
    assert (start["index"], start["id"], start["function"]["name"]) == (0, "t1", "weather")
    arguments = "".join(
        p["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"] for p in payloads[2:5]
    )
    assert arguments == '{"city": 1}'
    assert payloads[5]["choices"][0]["finish_reason"] == "tool_calls"
    assert payloads[6]["choices"] == []
    assert payloads[6]["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


def test_model_ids_are_percent_encoded_in_the_path() -> None:
    assert (
        model_path("anthropic.claude-v2:1", "converse") == "/model/anthropic.claude-v2%3A1/converse"
    )
    arn = "arn:aws:bedrock:us-east-1:1:inference-profile/x"
    assert "/" not in model_path(arn, "converse").removeprefix("/model/").removesuffix("/converse")


def _answer(status: int, error_type: str, message: str = "nope") -> httpx.Response:
    return httpx.Response(
        status,
        headers={"x-amzn-errortype": f"{error_type}:http://internal.amazon.com/coral/"},
        json={"message": message},
    )


@pytest.mark.parametrize(
    ("status", "error_type", "retryable"),
    [
        (429, "ThrottlingException", True),
        (400, "ServiceQuotaExceededException", True),
        (500, "InternalServerException", True),
        (503, "ServiceUnavailableException", True),
        (400, "ValidationException", False),
        (403, "UnrecognizedClientException", False),
        (403, "InvalidSignatureException", False),
        (403, "AccessDeniedException", False),
        (404, "ResourceNotFoundException", False),
    ],
)
def test_errors_say_whether_to_retry(status: int, error_type: str, retryable: bool) -> None:
    response = _answer(status, error_type)
    err = bedrock_failure(PROVIDER, response, response.content)
    assert (err.status, err.retryable) == (status, retryable)
    assert error_type in str(err)
    body = json.loads(err.body)["error"]
    assert body["code"] == error_type
    assert body["message"] == "Bedrock: nope"


class _Canned(httpx.AsyncBaseTransport):
    """Answers every request with one response, and keeps the requests."""

    def __init__(self, status: int, content: bytes, headers: dict[str, str]) -> None:
        self.status, self.content, self.headers = status, content, headers
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        await request.aread()
        return httpx.Response(self.status, content=self.content, headers=self.headers)


async def _collect(chunks: AsyncIterator[bytes]) -> list[bytes]:
    return [c async for c in chunks]


async def test_event_stream_framing_is_decoded() -> None:
    events = fake.converse_events(
        fake.parse_converse("m", {"messages": [{"role": "user", "content": [{"text": "hi"}]}]})[0],
        None,
    )
    framed = b"".join(fake.encode_event(kind, data) for kind, data in events)
    transport = _Canned(200, framed, {"content-type": fake.EVENT_STREAM})
    client = client_for(transport, PROVIDER)
    chunks = await _collect(
        await client.open_chat_stream(
            {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        )
    )
    assert chunks[-1] == sse.DONE
    text = "".join(
        p["choices"][0]["delta"].get("content", "") for p in _payloads(chunks) if p["choices"]
    )
    assert text == "This is a fake answer to: hi"
    request = transport.requests[0]
    assert request.url.path == "/model/m/converse-stream"
    assert request.headers["authorization"].startswith(
        f"AWS4-HMAC-SHA256 Credential={fake.TEST_ACCESS_KEY_ID}/"
    )


async def test_an_exception_event_fails_the_stream() -> None:
    framed = fake.encode_event("messageStart", {"role": "assistant"}) + fake.encode_exception(
        "throttlingException", "slow down"
    )
    client = client_for(_Canned(200, framed, {}), PROVIDER)
    stream = await client.open_chat_stream(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    )
    with pytest.raises(ProviderCallError, match="throttlingException: slow down"):
        await _collect(stream)


async def test_a_corrupt_frame_fails_the_stream() -> None:
    framed = bytearray(fake.encode_event("messageStart", {"role": "assistant"}))
    framed[-1] ^= 0xFF  # the message CRC no longer matches
    client = client_for(_Canned(200, bytes(framed), {}), PROVIDER)
    stream = await client.open_chat_stream(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    )
    with pytest.raises(ProviderCallError, match="broken event stream"):
        await _collect(stream)


async def test_a_stream_cut_before_message_stop_fails() -> None:
    framed = fake.encode_event("messageStart", {"role": "assistant"})
    client = client_for(_Canned(200, framed, {}), PROVIDER)
    stream = await client.open_chat_stream(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    )
    with pytest.raises(ProviderCallError, match="before messageStop"):
        await _collect(stream)


async def test_embeddings_are_a_400() -> None:
    client = client_for(_Canned(200, b"", {}), PROVIDER)
    with pytest.raises(UnsupportedError, match="no embeddings"):
        await client.embeddings({"model": "m", "input": "x"})
