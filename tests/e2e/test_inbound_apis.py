"""Every inbound API is one flow: usage is counted and budgets refuse on each, in its own shape."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import anthropic
import openai
import pytest
from redis.asyncio import Redis

from llmproxy._gen.authz.v1 import authz_pb2
from llmproxy.common.redis import connect_redis
from llmproxy.common.usage import Identity, RedisUsageStore, Usage, usage_key
from llmproxy.devstack.stack import Stack
from tests.e2e.conftest import create_key
from tests.harness.waiting import eventually_sync

MODEL = "gpt-4o-mini"
QUESTION = "Count me on every API"


def _clients(gateway_url: str, key: str) -> tuple[openai.OpenAI, anthropic.Anthropic]:
    base = gateway_url.removesuffix("/v1")
    return (
        openai.OpenAI(base_url=gateway_url, api_key=key, max_retries=0),
        anthropic.Anthropic(base_url=base, api_key=key, max_retries=0),
    )


def _ask_every_api(gateway_url: str, key: str) -> None:
    """One uncached request through each generating API (temperature 1: never cached)."""
    sdk, claude = _clients(gateway_url, key)
    with sdk, claude:
        sdk.chat.completions.create(
            model=MODEL, temperature=1, messages=[{"role": "user", "content": QUESTION}]
        )
        sdk.responses.create(model=MODEL, temperature=1, input=QUESTION)
        sdk.completions.create(model=MODEL, temperature=1, prompt=QUESTION)
        # No temperature: this SDK no longer takes one, and without it nothing is cached.
        claude.messages.create(
            model=MODEL, max_tokens=50, messages=[{"role": "user", "content": QUESTION}]
        )


async def _key_usage(stack: Stack, key_id: str) -> dict[str, str]:
    redis: Redis = connect_redis(stack.config.redis)
    try:
        hash_key = usage_key("key", key_id, "day", datetime.now(UTC))
        raw = await redis.hgetall(hash_key)
    finally:
        await redis.aclose()
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in raw.items()}


def test_every_api_is_counted_in_the_keys_usage(stack_logs: Stack, gateway_url: str) -> None:
    created = create_key(stack_logs, tenant="e2e-apis")
    _ask_every_api(gateway_url, created.secret)

    usage = eventually_sync(
        lambda: asyncio.run(_key_usage(stack_logs, created.key.key_id)),
        lambda found: int(found.get("requests", 0)) == 4,
        what="four requests in the key's usage",
    )
    assert int(usage["prompt_tokens"]) > 0
    assert int(usage["completion_tokens"]) > 0


def test_a_spent_budget_refuses_every_api_in_its_own_shape(
    stack_logs: Stack, gateway_url: str
) -> None:
    created = create_key(stack_logs, tenant="e2e-apis", budget=authz_pb2.Budget(monthly_usd=1.0))

    async def spend() -> None:
        redis = connect_redis(stack_logs.config.redis)
        identity = Identity(tenant="e2e-apis", user="default", key_id=created.key.key_id)
        try:
            await RedisUsageStore(redis).record(identity, MODEL, Usage(10, 10, 1.25))
        finally:
            await redis.aclose()

    asyncio.run(spend())
    sdk, claude = _clients(gateway_url, created.secret)
    with sdk, claude:
        refusals = []
        with pytest.raises(openai.RateLimitError) as responses:
            sdk.responses.create(model=MODEL, input=QUESTION)
        refusals.append(responses.value)
        with pytest.raises(openai.RateLimitError) as completions:
            sdk.completions.create(model=MODEL, prompt=QUESTION)
        refusals.append(completions.value)
        for error in refusals:
            assert error.code == "budget_exceeded"
            assert "monthly budget of $1.00" in error.message
        with pytest.raises(anthropic.RateLimitError) as messages:
            claude.messages.create(
                model=MODEL, max_tokens=50, messages=[{"role": "user", "content": QUESTION}]
            )
    body = messages.value.body
    assert isinstance(body, dict)
    assert body["type"] == "error"
    assert body["error"]["type"] == "rate_limit_error"
    assert "monthly budget of $1.00" in body["error"]["message"]
