"""Spend through the servicer: the answering target's prices, cached prompt tokens discounted,
and the same cost in usage, the cache entry and the cache's savings."""

from __future__ import annotations

import json
from typing import Any

import pytest

from llmproxy._gen.router.v1 import openai_pb2
from llmproxy.common.usage import Usage
from llmproxy.router.providers import sse
from llmproxy.router.settings import ModelSettings, ModelTarget
from tests.unit.router.fakes import Context, failure
from tests.unit.router.servicers import TwoTargets

# A dollar a token keeps the sums easy; the backup is cheaper and discounts cached prompts.
MODEL = ModelSettings(
    name="m",
    targets=[
        ModelTarget(provider="primary", model="up-1"),
        ModelTarget(
            provider="backup",
            model="up-2",
            input_usd_per_mtok=500_000,
            output_usd_per_mtok=1_000_000,
            cached_input_usd_per_mtok=100_000,
        ),
    ],
    input_usd_per_mtok=1_000_000,
    output_usd_per_mtok=2_000_000,
)
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}
USAGE = {
    "prompt_tokens": 10,
    "completion_tokens": 4,
    "total_tokens": 14,
    "prompt_tokens_details": {"cached_tokens": 6},
}


def _answer() -> bytes:
    message = {"role": "assistant", "content": "ok"}
    return json.dumps({"choices": [{"index": 0, "message": message}], "usage": USAGE}).encode()


def _stream() -> list[bytes]:
    return [
        sse.encode({"choices": [{"index": 0, "delta": {"content": "ok"}}]}),
        sse.encode({"choices": [], "usage": USAGE}),
        sse.DONE,
    ]


class Harness(TwoTargets):
    def __init__(self, primary: list[Any], backup: list[Any]) -> None:
        super().__init__(MODEL, primary, backup)

    async def chat(self, body: dict[str, Any]) -> dict[str, str]:
        context = Context({"x-llmproxy-tenant": "acme", "x-llmproxy-key-id": "k1"})
        request = openai_pb2.CreateChatCompletionRequest(body={"data": json.dumps(body).encode()})
        async for _ in self.servicer.CreateChatCompletion(request, context):  # type: ignore[arg-type]
            pass
        return context.metadata

    def recorded(self) -> list[Usage]:
        return [usage for _, _, usage in self.usage.records]


# At the primary's prices: 10 prompt at 1 (no cached price: no discount), 4 completion at 2.
PRIMARY_COST = 10 * 1.0 + 4 * 2.0
# At the backup's: 4 uncached at 0.5, 6 cached at 0.1, 4 completion at 1.
BACKUP_COST = 4 * 0.5 + 6 * 0.1 + 4 * 1.0


@pytest.mark.parametrize("stream", [False, True])
async def test_the_answering_target_prices_the_call(stream: bool) -> None:
    script = _stream() if stream else _answer()
    harness = Harness(primary=[script], backup=[])
    metadata = await harness.chat({**CHAT, "stream": stream})
    assert metadata["x-llmproxy-provider"] == "primary"
    (usage,) = harness.recorded()
    assert usage.cost_usd == pytest.approx(PRIMARY_COST)


@pytest.mark.parametrize("stream", [False, True])
async def test_failover_records_the_backups_price_with_its_cached_discount(stream: bool) -> None:
    script = _stream() if stream else _answer()
    harness = Harness(primary=[failure(503), failure(503)], backup=[script])
    metadata = await harness.chat({**CHAT, "stream": stream})
    assert metadata["x-llmproxy-provider"] == "backup"
    (usage,) = harness.recorded()
    assert usage == Usage(10, 4, pytest.approx(BACKUP_COST))  # type: ignore[arg-type]

    # The cache entry keeps that cost, and a hit counts it as saved.
    ((entry, _, _),) = harness.cache.entries.values()
    assert entry.cost_usd == pytest.approx(BACKUP_COST)
    assert await harness.chat({**CHAT, "stream": stream}) == {"x-cache": "HIT"}
    await harness.stats.flush(harness.cache)
    assert harness.cache.stats["m"]["saved_usd"] == pytest.approx(BACKUP_COST)
    assert len(harness.recorded()) == 1  # a hit costs nothing
