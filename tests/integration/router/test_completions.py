"""Legacy completions: the openai and azure adapters against the fake provider, the adapters
without them refusing, and the router answering them over gRPC with its cache in Redis."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from botocore.credentials import Credentials

from llmproxy._gen.router.v1 import openai_pb2
from llmproxy.common.usage import RedisUsageStore
from llmproxy.router.providers import Provider, ProviderClient, client_for, sse
from llmproxy.router.providers.base import LEGACY_COMPLETIONS, UnsupportedError
from llmproxy.router.server import new_http_transport
from tests.harness.fake_provider import RunningProvider, fake_provider
from tests.harness.waiting import eventually
from tests.integration.router.conftest import Router

ANSWER = "This is a fake answer to: Complete me"
PROMPT = {"prompt": "Complete me", "max_tokens": 20}
USAGE = {"prompt_tokens": 2, "completion_tokens": 8, "total_tokens": 10}


@pytest.fixture
async def provider() -> AsyncIterator[RunningProvider]:
    async with fake_provider(["fake-gpt"]) as running:
        yield running


@pytest.fixture
async def transport() -> AsyncIterator[httpx.AsyncBaseTransport]:
    transport = new_http_transport()
    yield transport
    await transport.aclose()


def adapter(
    kind: str, transport: httpx.AsyncBaseTransport, provider: RunningProvider
) -> ProviderClient:
    if kind == "azure":
        config = Provider("az", "azure", provider.url, "az-key", 5.0, "2024-10-21")
    elif kind == "bedrock":
        keys = Credentials("AKIDEXAMPLE", "secret")
        config = Provider(
            "br", kind, provider.url, None, 5.0, region="us-east-1", aws_credentials=keys
        )
    else:
        config = Provider(kind[:3], kind, f"{provider.url}/v1", "key", 5.0)
    return client_for(transport, config)


def payloads(events: list[bytes]) -> list[dict[str, Any]]:
    return [p for p in (sse.data_json(e) for e in events) if isinstance(p, dict)]


@pytest.mark.parametrize(
    ("kind", "path"),
    [("openai", "/v1/completions"), ("azure", "/openai/deployments/fake-gpt/completions")],
)
async def test_adapter_answers_a_text_completion(
    kind: str, path: str, provider: RunningProvider, transport: httpx.AsyncBaseTransport
) -> None:
    client = adapter(kind, transport, provider)
    answer = json.loads(await client.completions({"model": "fake-gpt", **PROMPT}))
    assert answer["object"] == "text_completion"
    assert answer["choices"][0]["text"] == ANSWER
    assert answer["usage"] == USAGE
    stats = await provider.stats()
    assert stats["requests"] == {path: 1}
    assert stats["requests_with_credentials"] == 1


@pytest.mark.parametrize("kind", ["openai", "azure"])
async def test_adapter_stream_always_asks_for_usage(
    kind: str, provider: RunningProvider, transport: httpx.AsyncBaseTransport
) -> None:
    client = adapter(kind, transport, provider)
    body = {"model": "fake-gpt", **PROMPT, "stream": True}
    events = [e async for e in await client.open_completions_stream(body)]
    assert events[-1] == sse.DONE
    chunks = payloads(events)
    assert "".join(c["choices"][0]["text"] for c in chunks if c["choices"]) == ANSWER
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == USAGE


@pytest.mark.parametrize("kind", ["anthropic", "gemini", "bedrock"])
async def test_other_kinds_refuse_without_a_call(
    kind: str, provider: RunningProvider, transport: httpx.AsyncBaseTransport
) -> None:
    client = adapter(kind, transport, provider)
    with pytest.raises(UnsupportedError) as whole:
        await client.completions({"model": "fake-gpt", **PROMPT})
    with pytest.raises(UnsupportedError) as streamed:
        await client.open_completions_stream({"model": "fake-gpt", **PROMPT, "stream": True})
    for refusal in (whole.value, streamed.value):
        assert refusal.feature == LEGACY_COMPLETIONS
        assert refusal.retryable
        assert f"({kind}) has no legacy completions" in str(refusal)
    assert (await provider.stats())["requests"] == {}


async def complete(
    router: Router, body: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[dict[str, str], list[bytes]]:
    call = router.openai.CreateCompletion(
        openai_pb2.CreateCompletionRequest(body={"data": json.dumps(body).encode()}),
        metadata=tuple((headers or {}).items()),
    )
    replies: list[bytes] = []
    async for reply in call:
        stream = reply.content_type == "text/event-stream"
        replies.extend(sse.split(reply.data) if stream else [reply.data])
    return dict((await call.initial_metadata()) or ()), replies


async def test_router_caches_counts_and_streams_completions(
    router: Router, redis_client: aioredis.Redis
) -> None:
    identity = {"x-llmproxy-tenant": "acme", "x-llmproxy-user": "ann", "x-llmproxy-key-id": "k1"}
    body = {"model": "gpt", **PROMPT, "temperature": 0}
    miss, first = await complete(router, body, identity)
    hit, second = await complete(router, {**body, "model": "gpt-latest"}, identity)
    assert (miss["x-cache"], hit["x-cache"]) == ("MISS", "HIT")
    assert first == second
    assert json.loads(first[0])["choices"][0]["text"] == ANSWER
    assert await router.provider.requests("/v1/completions") == 1
    _, events = await complete(router, {**body, "stream": True}, identity)
    assert "".join(p["choices"][0]["text"] for p in payloads(events)) == ANSWER
    assert not [p for p in payloads(events) if p.get("usage")]  # not asked for
    # Two provider calls (the whole answer and the stream), each 2 + 8 tokens at 1 and 2 $/Mtok.
    store = RedisUsageStore(redis_client)
    expected = 2 * (2 * 1.0 + 8 * 2.0) / 1e6
    await eventually(
        lambda: store.spend_usd("key", "k1", "day"),
        lambda v: v == pytest.approx(expected),
        what="spend recorded",
    )


async def test_router_fails_over_past_anthropic_or_names_the_gap(router: Router) -> None:
    metadata, replies = await complete(router, {"model": "claude-then-gpt", **PROMPT})
    assert metadata["x-llmproxy-provider"] == "oai"
    assert json.loads(replies[0])["choices"][0]["text"] == ANSWER
    metadata, replies = await complete(router, {"model": "claude", **PROMPT})
    assert metadata["x-llmproxy-status"] == "400"
    error = json.loads(replies[0])["error"]
    assert error["code"] == "unsupported_feature"
    assert error["message"] == (
        "This model's providers do not support legacy completions: 'claude' (anthropic)."
    )
