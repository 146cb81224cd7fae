"""Models targeting Azure OpenAI and Gemini providers answer through the router, usage counted."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
import redis.asyncio as aioredis

from llmproxy.common.usage import RedisUsageStore, usage_key
from llmproxy.config import StackConfig
from llmproxy.router.providers import sse
from llmproxy.router.server import serve
from tests.harness.fake_provider import fake_provider
from tests.harness.services import served
from tests.harness.waiting import eventually
from tests.integration.router.conftest import Router

AZURE_KEY_ENV = "LLMPROXY_TEST_AZURE_KEY"
GEMINI_KEY_ENV = "LLMPROXY_TEST_GEMINI_KEY"
HELLO = [{"role": "user", "content": "Hello kinds"}]
ANSWER = "This is a fake answer to: Hello kinds"
PRICES = {"input_usd_per_mtok": 1.0, "output_usd_per_mtok": 2.0}


def kinds_config(redis_url: str, provider_url: str) -> StackConfig:
    """One provider of each new kind on the one fake server, and a model on each."""
    return StackConfig.model_validate(
        {
            "redis": {"url": redis_url},
            "services": {"router": {"grpc_port": 0, "metrics_port": 0, "via_egress": False}},
            "providers": [
                {
                    "name": "azure",
                    "kind": "azure",
                    "base_url": provider_url,
                    "api_key_env": AZURE_KEY_ENV,
                    "api_version": "2024-10-21",
                },
                {
                    "name": "gemini",
                    "kind": "gemini",
                    "base_url": f"{provider_url}/v1beta",
                    "api_key_env": GEMINI_KEY_ENV,
                },
            ],
            "models": [
                {"name": "az", "targets": [{"provider": "azure", "model": "fake-gpt"}], **PRICES},
                {
                    "name": "gem",
                    "targets": [{"provider": "gemini", "model": "fake-gemini"}],
                    **PRICES,
                },
            ],
        }
    )


@pytest.fixture
async def router(
    redis_process: str, redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Router]:
    monkeypatch.setenv(AZURE_KEY_ENV, "test-azure-key")
    monkeypatch.setenv(GEMINI_KEY_ENV, "test-gemini-key")
    async with fake_provider(["fake-gpt", "fake-gemini"]) as provider:
        config = kinds_config(redis_process, provider.url)
        async with served(serve(config)) as service:
            yield Router(service.running, provider, service.channel)


@pytest.mark.parametrize("model", ["az", "gem"])
async def test_chat_sync_and_stream_with_usage_counted(
    model: str, router: Router, redis_client: aioredis.Redis
) -> None:
    identity = {"x-llmproxy-tenant": "acme", "x-llmproxy-key-id": f"key-{model}"}
    provider = {"az": "azure", "gem": "gemini"}[model]

    metadata, replies = await router.chat({"model": model, "messages": HELLO}, identity)
    assert metadata["x-llmproxy-provider"] == provider
    answer = json.loads(replies[0])
    assert answer["choices"][0]["message"]["content"] == ANSWER
    usage = answer["usage"]

    body = {"model": model, "messages": HELLO, "stream": True}
    stream_metadata, events = await router.chat(
        {**body, "stream_options": {"include_usage": True}}, identity
    )
    assert stream_metadata["x-llmproxy-provider"] == provider
    assert events[-1] == sse.DONE
    payloads = [sse.data_json(e) for e in events[:-1]]
    text = "".join(p["choices"][0]["delta"].get("content", "") for p in payloads if p["choices"])
    assert text == ANSWER
    assert payloads[-1]["usage"] == usage

    # Both calls are counted, tokens and cost, once the router's batch is written.
    key = usage_key("model", model, "day", datetime.now(UTC))
    await eventually(
        lambda: redis_client.hget(key, "requests"), lambda v: v == b"2", what="both counted"
    )
    counted = await redis_client.hgetall(key)
    assert int(counted[b"prompt_tokens"]) == 2 * usage["prompt_tokens"]
    assert int(counted[b"completion_tokens"]) == 2 * usage["completion_tokens"]
    expected = 2 * (usage["prompt_tokens"] * 1.0 + usage["completion_tokens"] * 2.0) / 1e6
    store = RedisUsageStore(redis_client)
    assert await store.spend_usd("key", f"key-{model}", "day") == pytest.approx(expected)
