"""A model targeting Bedrock, through the router to the fake provider's signed Converse API."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from llmproxy.common.usage import RedisUsageStore
from llmproxy.config import StackConfig
from llmproxy.fakeprovider import bedrock as fake
from llmproxy.router.providers import sse
from llmproxy.router.server import serve
from tests.harness.fake_provider import fake_provider
from tests.harness.services import served
from tests.harness.waiting import eventually
from tests.integration.router.conftest import Router

HELLO = [{"role": "user", "content": "Hello bedrock"}]
IDENTITY = {"x-llmproxy-tenant": "acme", "x-llmproxy-user": "ann", "x-llmproxy-key-id": "kb"}


@pytest.fixture
async def router(
    redis_process: str, redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Router]:
    """A router whose one provider is Bedrock, served by the fake with its test credentials."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", fake.TEST_ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", fake.TEST_SECRET_ACCESS_KEY)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    async with fake_provider(["anthropic.claude-fake-v1:0"]) as provider:
        config = StackConfig.model_validate(
            {
                "redis": {"url": redis_process},
                "services": {"router": {"grpc_port": 0, "metrics_port": 0, "via_egress": False}},
                "providers": [
                    {
                        "name": "br",
                        "kind": "bedrock",
                        "region": "eu-west-1",
                        "base_url": provider.url,
                    }
                ],
                "models": [
                    {
                        "name": "claude",
                        "targets": [{"provider": "br", "model": "anthropic.claude-fake-v1:0"}],
                        "input_usd_per_mtok": 3.0,
                        "output_usd_per_mtok": 15.0,
                    }
                ],
            }
        )
        async with served(serve(config)) as service:
            yield Router(service.running, provider, service.channel)


async def test_chat_and_stream_answer_with_usage_accounted(
    router: Router, redis_client: aioredis.Redis
) -> None:
    metadata, replies = await router.chat({"model": "claude", "messages": HELLO}, IDENTITY)
    assert metadata["x-llmproxy-provider"] == "br"
    answer = json.loads(replies[0])
    assert answer["choices"][0]["message"]["content"] == "This is a fake answer to: Hello bedrock"
    usage = answer["usage"]
    assert usage["prompt_tokens"] > 0
    assert usage["completion_tokens"] > 0

    _, events = await router.chat(
        {
            "model": "claude",
            "messages": HELLO,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        IDENTITY,
    )
    assert events[-1] == sse.DONE
    payloads = [sse.data_json(e) for e in events[:-1]]
    text = "".join(p["choices"][0]["delta"].get("content", "") for p in payloads if p["choices"])
    assert text == "This is a fake answer to: Hello bedrock"
    assert payloads[-1]["usage"] == usage

    store = RedisUsageStore(redis_client)
    expected = 2 * (usage["prompt_tokens"] * 3.0 + usage["completion_tokens"] * 15.0) / 1e6
    await eventually(
        lambda: store.spend_usd("model", "claude", "day"),
        lambda v: v >= expected * 0.999,
        what="both calls' spend recorded",
    )
    assert await store.spend_usd("key", "kb", "day") == pytest.approx(expected)
    # Model ids with colons reach Bedrock's path percent-encoded, and still match the signature.
    assert await router.provider.requests("/model/anthropic.claude-fake-v1:0/converse") == 1


async def test_throttling_is_retried_then_reported(router: Router) -> None:
    router.provider.knobs.error_rate = 1.0
    router.provider.knobs.error_status = 429
    metadata, replies = await router.chat({"model": "claude", "messages": HELLO})
    assert metadata["x-llmproxy-status"] == "429"
    assert json.loads(replies[0])["error"]["type"] == "rate_limit_exceeded"
    assert await router.provider.requests("/model/anthropic.claude-fake-v1:0/converse") > 1


async def test_json_mode_is_a_clear_400(router: Router) -> None:
    body = {"model": "claude", "messages": HELLO, "response_format": {"type": "json_object"}}
    metadata, replies = await router.chat(body)
    assert metadata["x-llmproxy-status"] == "400"
    assert "JSON mode" in json.loads(replies[0])["error"]["message"]
    assert await router.provider.requests("/model/anthropic.claude-fake-v1:0/converse") == 0
