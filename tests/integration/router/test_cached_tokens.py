"""Prompt cache reads, from each adapter over HTTP to the fake provider, to the recorded spend.

Every adapter reports the cache reads its provider reports (the fake's cached_prompt_tokens
knob) as OpenAI's prompt_tokens_details.cached_tokens, prompt_tokens counting the whole prompt;
the router prices them at the answering target's cached input price.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from botocore.credentials import Credentials

from llmproxy.common.usage import RedisUsageStore
from llmproxy.config import StackConfig
from llmproxy.fakeprovider import bedrock as fake_bedrock
from llmproxy.router.providers import Provider, ProviderClient, client_for, sse
from llmproxy.router.server import new_http_transport, serve
from tests.harness.fake_provider import RunningProvider, fake_provider
from tests.harness.services import served
from tests.harness.waiting import eventually
from tests.integration.router.conftest import Router

HELLO = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "Hello cache"}]
PROMPT_TOKENS = 4  # the fake counts words: "be brief Hello cache"
CACHED = 3
BEDROCK_CREDENTIALS = Credentials(
    fake_bedrock.TEST_ACCESS_KEY_ID, fake_bedrock.TEST_SECRET_ACCESS_KEY
)


def _provider(kind: str, url: str) -> Provider:
    if kind == "bedrock":
        credentials = BEDROCK_CREDENTIALS
        return Provider(
            kind,
            kind,
            url,
            None,
            5.0,
            origin_url=url,
            region="eu-west-1",
            aws_credentials=credentials,
        )
    base = {"openai": f"{url}/v1", "anthropic": f"{url}/v1", "gemini": f"{url}/v1beta"}
    return Provider(kind, kind, base.get(kind, url), "key", 5.0, "2024-10-21")


@pytest.fixture
async def provider() -> AsyncIterator[RunningProvider]:
    async with fake_provider(["fake-model"]) as running:
        yield running


@pytest.fixture
async def make_client(provider: RunningProvider) -> AsyncIterator[Callable[[str], ProviderClient]]:
    transport = new_http_transport()
    yield lambda kind: client_for(transport, _provider(kind, provider.url))
    await transport.aclose()


async def _usages(client: ProviderClient) -> tuple[Any, Any]:
    """The usage of a whole answer and of a stream's usage chunk."""
    body = {"model": "fake-model", "messages": HELLO, "max_tokens": 50}
    whole = json.loads(await client.chat(body))["usage"]
    events = [e async for e in await client.open_chat_stream({**body, "stream": True})]
    assert events[-1] == sse.DONE
    return whole, sse.data_json(events[-2])["usage"]


KINDS = ["openai", "azure", "anthropic", "gemini", "bedrock"]


@pytest.mark.parametrize("kind", KINDS)
async def test_cache_reads_become_openais_cached_tokens(
    kind: str, provider: RunningProvider, make_client: Callable[[str], ProviderClient]
) -> None:
    provider.knobs.cached_prompt_tokens = CACHED
    whole, streamed = await _usages(make_client(kind))
    assert whole["prompt_tokens"] == PROMPT_TOKENS  # cache reads included
    assert whole["prompt_tokens_details"] == {"cached_tokens": CACHED}
    assert whole["total_tokens"] == PROMPT_TOKENS + whole["completion_tokens"]
    assert streamed == whole


@pytest.mark.parametrize("kind", KINDS)
async def test_no_cache_reads_no_cached_tokens(
    kind: str, make_client: Callable[[str], ProviderClient]
) -> None:
    whole, streamed = await _usages(make_client(kind))
    assert whole["prompt_tokens"] == PROMPT_TOKENS
    assert "prompt_tokens_details" not in whole
    assert streamed == whole


ANTHROPIC_KEY_ENV = "LLMPROXY_TEST_CACHED_ANTHROPIC_KEY"
IDENTITY = {"x-llmproxy-tenant": "acme", "x-llmproxy-key-id": "k-cached"}


@pytest.fixture
async def router(
    redis_process: str, redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Router]:
    """A model whose first target is down and whose second, Anthropic, has its own prices."""
    monkeypatch.setenv(ANTHROPIC_KEY_ENV, "test-key")
    async with fake_provider(["fake-model"]) as down, fake_provider(["fake-model"]) as up:
        down.knobs.outage = "503"
        up.knobs.cached_prompt_tokens = CACHED
        config = StackConfig.model_validate(
            {
                "redis": {"url": redis_process},
                "services": {
                    "router": {
                        "grpc_port": 0,
                        "metrics_port": 0,
                        "via_egress": False,
                        "failover": {"retries_per_target": 0},
                    }
                },
                "providers": [
                    {"name": "down", "kind": "openai", "base_url": f"{down.url}/v1"},
                    {
                        "name": "claude",
                        "kind": "anthropic",
                        "base_url": f"{up.url}/v1",
                        "api_key_env": ANTHROPIC_KEY_ENV,
                    },
                ],
                "models": [
                    {
                        "name": "m",
                        "targets": [
                            {"provider": "down", "model": "fake-model"},
                            {
                                "provider": "claude",
                                "model": "fake-model",
                                "input_usd_per_mtok": 3.0,
                                "output_usd_per_mtok": 15.0,
                                "cached_input_usd_per_mtok": 0.3,
                            },
                        ],
                        "input_usd_per_mtok": 100.0,
                        "output_usd_per_mtok": 100.0,
                    }
                ],
            }
        )
        async with served(serve(config)) as service:
            yield Router(service.running, up, service.channel)


async def test_spend_is_the_answering_targets_price_with_cached_input_discounted(
    router: Router, redis_client: aioredis.Redis
) -> None:
    metadata, replies = await router.chat({"model": "m", "messages": HELLO}, IDENTITY)
    assert metadata["x-llmproxy-provider"] == "claude"
    usage = json.loads(replies[0])["usage"]
    assert usage["prompt_tokens_details"] == {"cached_tokens": CACHED}
    uncached = usage["prompt_tokens"] - CACHED
    expected = (uncached * 3.0 + CACHED * 0.3 + usage["completion_tokens"] * 15.0) / 1e6
    store = RedisUsageStore(redis_client)
    spent = await eventually(
        lambda: store.spend_usd("key", "k-cached", "day"), lambda v: v > 0, what="spend recorded"
    )
    assert spent == pytest.approx(expected)
