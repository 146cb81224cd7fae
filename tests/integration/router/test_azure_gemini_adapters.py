"""The Azure OpenAI and Gemini adapters over the router's real transport to the fake provider."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from llmproxy.fakeprovider.responses import embedding_vector
from llmproxy.router.providers import Provider, ProviderCallError, ProviderClient, client_for, sse
from llmproxy.router.server import new_http_transport
from tests.harness.fake_provider import RunningProvider, fake_provider

MODELS = ["fake-gpt", "fake-gemini", "fake-embed"]
HELLO = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "Hello adapter"}]
MakeClient = Callable[..., ProviderClient]
ANSWER = "This is a fake answer to: Hello adapter"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "Look a thing up.",
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string"}},
                "additionalProperties": False,
            },
        },
    }
]


@pytest.fixture
async def provider() -> AsyncIterator[RunningProvider]:
    async with fake_provider(MODELS) as running:
        yield running


@pytest.fixture
async def transport() -> AsyncIterator[httpx.AsyncBaseTransport]:
    transport = new_http_transport()
    yield transport
    await transport.aclose()


def azure(
    transport: httpx.AsyncBaseTransport, provider: RunningProvider, key: str | None = "az-key"
) -> ProviderClient:
    return client_for(transport, Provider("az", "azure", provider.url, key, 5.0, "2024-10-21"))


def gemini(
    transport: httpx.AsyncBaseTransport, provider: RunningProvider, key: str | None = "gm-key"
) -> ProviderClient:
    return client_for(transport, Provider("gm", "gemini", f"{provider.url}/v1beta", key, 5.0))


def chunks(events: list[bytes]) -> list[dict[str, Any]]:
    payloads = [sse.data_json(e) for e in events]
    return [p for p in payloads if isinstance(p, dict)]


def streamed_text(payloads: list[dict[str, Any]]) -> str:
    text = ""
    for payload in payloads:
        for choice in payload["choices"]:
            text += choice["delta"].get("content") or ""
    return text


async def collect(stream: AsyncIterator[bytes]) -> list[bytes]:
    return [event async for event in stream]


@pytest.mark.parametrize(("make", "model"), [(azure, "fake-gpt"), (gemini, "fake-gemini")])
async def test_chat_answers_in_openai_format(
    make: MakeClient, model: str, provider: RunningProvider, transport: httpx.AsyncBaseTransport
) -> None:
    client = make(transport, provider)
    answer = json.loads(await client.chat({"model": model, "messages": HELLO, "max_tokens": 50}))
    assert answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"]["content"] == ANSWER
    assert answer["choices"][0]["finish_reason"] == "stop"
    usage = answer["usage"]
    # The fake counts words: "be brief Hello adapter", and the answer's eight.
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (4, 8, 12)


@pytest.mark.parametrize(("make", "model"), [(azure, "fake-gpt"), (gemini, "fake-gemini")])
async def test_stream_ends_with_a_usage_chunk_and_done(
    make: MakeClient, model: str, provider: RunningProvider, transport: httpx.AsyncBaseTransport
) -> None:
    client = make(transport, provider)
    events = await collect(
        await client.open_chat_stream({"model": model, "messages": HELLO, "stream": True})
    )
    assert events[-1] == sse.DONE
    payloads = chunks(events)
    assert all(p["object"] == "chat.completion.chunk" for p in payloads)
    assert streamed_text(payloads) == ANSWER
    finishes = [c["finish_reason"] for p in payloads for c in p["choices"]]
    assert [f for f in finishes if f] == ["stop"]
    assert payloads[-1]["choices"] == []
    assert payloads[-1]["usage"] == {
        "prompt_tokens": 4,
        "completion_tokens": 8,
        "total_tokens": 12,
    }


async def test_azure_sends_the_deployment_path_api_version_and_api_key(
    provider: RunningProvider, transport: httpx.AsyncBaseTransport
) -> None:
    await azure(transport, provider).chat({"model": "fake-gpt", "messages": HELLO})
    stats = await provider.stats()
    assert stats["requests"] == {"/openai/deployments/fake-gpt/chat/completions": 1}
    assert stats["requests_with_credentials"] == 1


async def test_azure_embeddings(
    provider: RunningProvider, transport: httpx.AsyncBaseTransport
) -> None:
    answer = json.loads(
        await azure(transport, provider).embeddings({"model": "fake-embed", "input": ["a b"]})
    )
    assert answer["data"][0]["embedding"] == embedding_vector("a b")


async def test_gemini_embeddings_as_floats_and_base64(
    provider: RunningProvider, transport: httpx.AsyncBaseTransport
) -> None:
    client = gemini(transport, provider)
    body = {"model": "fake-embed", "input": ["one", "two words"]}
    floats = json.loads(await client.embeddings(body))
    assert [d["embedding"] for d in floats["data"]] == [
        embedding_vector("one"),
        embedding_vector("two words"),
    ]
    assert floats["usage"]["prompt_tokens"] > 0
    packed = json.loads(await client.embeddings({**body, "encoding_format": "base64"}))
    raw = base64.b64decode(packed["data"][1]["embedding"])
    assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == embedding_vector("two words")


async def test_gemini_function_calling_round_trip(
    provider: RunningProvider, transport: httpx.AsyncBaseTransport
) -> None:
    client = gemini(transport, provider)
    ask = {"model": "fake-gemini", "messages": HELLO, "tools": TOOLS, "tool_choice": "required"}
    answer = json.loads(await client.chat(ask))
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    call = choice["message"]["tool_calls"][0]
    assert call["function"]["name"] == "lookup"
    assert json.loads(call["function"]["arguments"]) == {"query": ANSWER}
    # The tool's result goes back as a functionResponse the fake accepts; it answers in text.
    follow_up = [
        *HELLO,
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": '{"found": 3}'},
    ]
    final = json.loads(await client.chat({"model": "fake-gemini", "messages": follow_up}))
    assert final["choices"][0]["finish_reason"] == "stop"


async def test_gemini_streamed_tool_call(
    provider: RunningProvider, transport: httpx.AsyncBaseTransport
) -> None:
    body = {"model": "fake-gemini", "messages": HELLO, "tools": TOOLS, "tool_choice": "required"}
    events = await collect(await gemini(transport, provider).open_chat_stream(body))
    payloads = chunks(events)
    deltas = [c["delta"] for p in payloads for c in p["choices"]]
    calls = [call for d in deltas for call in d.get("tool_calls", [])]
    assert [(c["index"], c["function"]["name"]) for c in calls] == [(0, "lookup")]
    assert events[-1] == sse.DONE


async def test_gemini_json_mode_asks_for_json(
    provider: RunningProvider, transport: httpx.AsyncBaseTransport
) -> None:
    body = {"model": "fake-gemini", "messages": HELLO, "response_format": {"type": "json_object"}}
    answer = json.loads(await gemini(transport, provider).chat(body))
    assert json.loads(answer["choices"][0]["message"]["content"]) == {"answer": ANSWER}


@pytest.mark.parametrize("status", [429, 500, 503])
@pytest.mark.parametrize(("make", "model"), [(azure, "fake-gpt"), (gemini, "fake-gemini")])
async def test_provider_trouble_is_retryable(
    status: int,
    make: MakeClient,
    model: str,
    provider: RunningProvider,
    transport: httpx.AsyncBaseTransport,
) -> None:
    provider.knobs.error_rate, provider.knobs.error_status = 1.0, status
    client = make(transport, provider)
    body = {"model": model, "messages": HELLO}
    with pytest.raises(ProviderCallError) as whole:
        await client.chat(body)
    with pytest.raises(ProviderCallError) as streamed:
        await client.open_chat_stream({**body, "stream": True})
    for raised in (whole.value, streamed.value):
        assert (raised.status, raised.retryable) == (status, True)
        assert json.loads(raised.body)["error"]["message"]  # OpenAI's error shape


@pytest.mark.parametrize(
    ("make", "model", "status"), [(azure, "fake-gpt", 401), (gemini, "fake-gemini", 403)]
)
async def test_a_missing_key_is_an_auth_error_not_retried(
    make: MakeClient,
    model: str,
    status: int,
    provider: RunningProvider,
    transport: httpx.AsyncBaseTransport,
) -> None:
    client = make(transport, provider, None)
    with pytest.raises(ProviderCallError) as raised:
        await client.chat({"model": model, "messages": HELLO})
    assert (raised.value.status, raised.value.retryable) == (status, False)


@pytest.mark.parametrize(("make", "model"), [(azure, "no-such"), (gemini, "no-such")])
async def test_an_unknown_model_is_not_retried(
    make: MakeClient, model: str, provider: RunningProvider, transport: httpx.AsyncBaseTransport
) -> None:
    client = make(transport, provider)
    with pytest.raises(ProviderCallError) as raised:
        await client.chat({"model": model, "messages": HELLO})
    assert (raised.value.status, raised.value.retryable) == (404, False)


async def test_gemini_bad_request_is_a_400_in_openai_shape(
    provider: RunningProvider, transport: httpx.AsyncBaseTransport
) -> None:
    body = {"model": "fake-gemini", "messages": HELLO, "n": 2}  # the fake allows one candidate
    with pytest.raises(ProviderCallError) as raised:
        await gemini(transport, provider).chat(body)
    assert (raised.value.status, raised.value.retryable) == (400, False)
    error = json.loads(raised.value.body)["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "invalid_argument"


async def test_the_outage_knob_applies_to_both_apis(
    provider: RunningProvider, transport: httpx.AsyncBaseTransport
) -> None:
    provider.knobs.outage = "503"
    for client, model in (
        (azure(transport, provider), "fake-gpt"),
        (gemini(transport, provider), "fake-gemini"),
    ):
        with pytest.raises(ProviderCallError) as raised:
            await client.chat({"model": model, "messages": HELLO})
        assert raised.value.status == 503
    stats = await provider.stats()
    assert stats["injected_errors"] == {"outage_503": 2}
