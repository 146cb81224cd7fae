"""The fake Bedrock runtime, called as the router calls it: signed, framed, misbehaving on cue."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from botocore.credentials import Credentials

from llmproxy.common import aws
from llmproxy.fakeprovider import bedrock as fake
from llmproxy.router.providers import client_for, sse
from llmproxy.router.providers.base import Provider, ProviderCallError
from llmproxy.router.providers.bedrock import model_path

from .conftest import RunningProvider

HELLO = [{"role": "user", "content": "Hello"}]
GOOD = Credentials(fake.TEST_ACCESS_KEY_ID, fake.TEST_SECRET_ACCESS_KEY)


@pytest.fixture
async def transport() -> AsyncIterator[httpx.AsyncHTTPTransport]:
    """The router's kind of transport, closed after the test."""
    async with httpx.AsyncHTTPTransport() as opened:
        yield opened


def bedrock(
    provider: RunningProvider,
    transport: httpx.AsyncHTTPTransport,
    credentials: Credentials = GOOD,
) -> Any:
    settings = Provider(
        "br",
        "bedrock",
        provider.url,
        None,
        5.0,
        origin_url=provider.url,
        region="eu-west-1",
        aws_credentials=credentials,
    )
    return client_for(transport, settings)


async def collect(chunks: AsyncIterator[bytes]) -> list[dict[str, Any]]:
    events = [c async for c in chunks]
    assert events[-1] == sse.DONE
    return [sse.data_json(e) for e in events[:-1]]


async def test_converse_answers_a_signed_request(
    provider: RunningProvider, transport: httpx.AsyncHTTPTransport
) -> None:
    answer = json.loads(
        await bedrock(provider, transport).chat({"model": "fake-claude", "messages": HELLO})
    )
    assert answer["choices"][0]["message"]["content"] == "This is a fake answer to: Hello"
    assert answer["usage"]["prompt_tokens"] == 1


async def test_converse_stream_is_event_stream_framed(
    provider: RunningProvider, transport: httpx.AsyncHTTPTransport
) -> None:
    async with httpx.AsyncClient() as http:
        url = f"{provider.url}{model_path('fake-claude', 'converse-stream')}"
        body = json.dumps({"messages": [{"role": "user", "content": [{"text": "Hello"}]}]}).encode()
        headers = {"content-type": "application/json"}
        signed = aws.sign(GOOD, "eu-west-1", url, headers=headers, body=body)
        response = await http.post(url, content=body, headers={**headers, **signed})
    assert response.status_code == 200
    assert response.headers["content-type"] == fake.EVENT_STREAM
    assert response.content.startswith(b"\x00")  # a binary prelude, not SSE text
    payloads = await collect(
        await bedrock(provider, transport).open_chat_stream(
            {"model": "fake-claude", "messages": HELLO}
        )
    )
    text = "".join(p["choices"][0]["delta"].get("content", "") for p in payloads if p["choices"])
    assert text == "This is a fake answer to: Hello"
    assert payloads[-1]["usage"]["completion_tokens"] == 7  # the fake counts words


async def test_tools_round_trip(
    provider: RunningProvider, transport: httpx.AsyncHTTPTransport
) -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]
    client = bedrock(provider, transport)
    first = json.loads(
        await client.chat({"model": "fake-claude", "messages": HELLO, "tools": tools})
    )
    choice = first["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    call = choice["message"]["tool_calls"][0]
    assert json.loads(call["function"]["arguments"]) == {"query": "Hello"}
    follow_up = [
        *HELLO,
        choice["message"],
        {"role": "tool", "tool_call_id": call["id"], "content": "found it"},
    ]
    second = json.loads(
        await client.chat({"model": "fake-claude", "messages": follow_up, "tools": tools})
    )
    assert second["choices"][0]["finish_reason"] == "stop"
    streamed = await collect(
        await client.open_chat_stream({"model": "fake-claude", "messages": HELLO, "tools": tools})
    )
    pieces = [p["choices"][0]["delta"].get("tool_calls") for p in streamed if p["choices"]]
    arguments = "".join(t[0]["function"]["arguments"] for t in pieces if t)
    assert json.loads(arguments) == {"query": "Hello"}


@pytest.mark.parametrize(
    ("credentials", "error_type"),
    [
        (Credentials(fake.TEST_ACCESS_KEY_ID, "not-the-secret"), "InvalidSignatureException"),
        (Credentials("AKIAUNKNOWN", fake.TEST_SECRET_ACCESS_KEY), "UnrecognizedClientException"),
    ],
)
async def test_bad_credentials_are_refused(
    provider: RunningProvider,
    transport: httpx.AsyncHTTPTransport,
    credentials: Credentials,
    error_type: str,
) -> None:
    with pytest.raises(ProviderCallError) as caught:
        await bedrock(provider, transport, credentials).chat(
            {"model": "fake-claude", "messages": HELLO}
        )
    assert (caught.value.status, caught.value.retryable) == (403, False)
    assert error_type in str(caught.value)


async def test_a_tampered_body_breaks_the_signature(
    provider: RunningProvider, transport: httpx.AsyncHTTPTransport
) -> None:
    url = f"{provider.url}/model/fake-claude/converse"
    body = json.dumps({"messages": [{"role": "user", "content": [{"text": "Hello"}]}]}).encode()
    headers = {"content-type": "application/json"}
    signed = aws.sign(GOOD, "eu-west-1", url, headers=headers, body=body)
    async with httpx.AsyncClient() as http:
        response = await http.post(url, content=body + b" ", headers={**headers, **signed})
        unsigned = await http.post(url, content=body, headers=headers)
    assert response.status_code == 403
    assert response.headers["x-amzn-errortype"] == "InvalidSignatureException"
    assert unsigned.status_code == 403
    assert unsigned.headers["x-amzn-errortype"] == "IncompleteSignatureException"


async def test_unknown_model_and_bad_body(
    provider: RunningProvider, transport: httpx.AsyncHTTPTransport
) -> None:
    with pytest.raises(ProviderCallError) as caught:
        await bedrock(provider, transport).chat({"model": "nope", "messages": HELLO})
    assert (caught.value.status, caught.value.retryable) == (404, False)
    with pytest.raises(ProviderCallError) as caught:
        await bedrock(provider, transport).chat({"model": "fake-claude", "messages": []})
    assert (caught.value.status, caught.value.retryable) == (400, False)
    assert "ValidationException" in str(caught.value)


@pytest.mark.parametrize(
    ("knobs", "status", "error_type"),
    [
        ({"error_rate": 1.0, "error_status": 429}, 429, "ThrottlingException"),
        ({"error_rate": 1.0, "error_status": 500}, 500, "InternalServerException"),
        ({"outage": "503"}, 503, "ServiceUnavailableException"),
    ],
)
async def test_fault_knobs_answer_in_bedrock_shape(
    provider: RunningProvider,
    transport: httpx.AsyncHTTPTransport,
    knobs: dict[str, Any],
    status: int,
    error_type: str,
) -> None:
    for name, value in knobs.items():
        setattr(provider.knobs, name, value)
    with pytest.raises(ProviderCallError) as caught:
        await bedrock(provider, transport).chat({"model": "fake-claude", "messages": HELLO})
    assert (caught.value.status, caught.value.retryable) == (status, True)
    assert json.loads(caught.value.body)["error"]["code"] == error_type
