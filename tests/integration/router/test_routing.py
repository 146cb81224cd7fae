"""Routing strategies through the router, over two fake providers that differ only in speed."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import pytest

from llmproxy._gen.router.v1 import openai_pb2
from llmproxy.config import StackConfig
from llmproxy.router.server import serve
from tests.harness.fake_provider import RunningProvider, fake_provider
from tests.harness.services import served
from tests.integration.router.conftest import Router

FAST, SLOW = "fast", "slow"
HELLO = [{"role": "user", "content": "Hello router"}]


def routed_config(redis_url: str, urls: dict[str, str]) -> StackConfig:
    """One model per routing, each over the two providers (fast first)."""
    targets = [{"provider": name, "model": "fake-gpt"} for name in (FAST, SLOW)]
    weighted = [{**targets[0], "weight": 3}, {**targets[1], "weight": 1}]
    return StackConfig.model_validate(
        {
            "redis": {"url": redis_url},
            "services": {
                "router": {
                    "grpc_port": 0,
                    "metrics_port": 0,
                    "via_egress": False,
                    "cache": {"enabled": False},
                },
                # No health service here: least-latency goes by the router's own measurements.
                "health": {"client": {"enabled": False}},
            },
            "providers": [
                {"name": name, "kind": "openai", "base_url": f"{url}/v1", "api_key_env": None}
                for name, url in urls.items()
            ],
            "models": [
                {"name": "ordered", "targets": targets},
                {"name": "weighted", "routing": "weighted", "targets": weighted},
                {"name": "least-latency", "routing": "least-latency", "targets": targets},
                {"name": "least-busy", "routing": "least-busy", "targets": targets},
            ],
        }
    )


@dataclass
class Routed:
    """A router over the fast and the slow fake provider."""

    router: Router
    providers: dict[str, RunningProvider]

    async def provider_of(self, model: str, stream: bool = False) -> str:
        """The provider that answered one request, as x-llmproxy-provider names it."""
        body: dict[str, Any] = {"model": model, "messages": HELLO, "stream": stream}
        metadata, replies = await self.router.chat(body)
        assert "x-llmproxy-status" not in metadata, replies
        return metadata["x-llmproxy-provider"]

    async def chat_calls(self) -> dict[str, int]:
        """Chat calls each fake provider has answered."""
        return {
            name: await p.requests("/v1/chat/completions") for name, p in self.providers.items()
        }


@pytest.fixture
async def routed(redis_process: str, redis_client: Any) -> AsyncIterator[Routed]:
    async with AsyncExitStack() as stack:
        providers = {
            name: await stack.enter_async_context(fake_provider(["fake-gpt"]))
            for name in (FAST, SLOW)
        }
        config = routed_config(redis_process, {n: p.url for n, p in providers.items()})
        service = await stack.enter_async_context(served(serve(config)))
        yield Routed(Router(service.running, providers[FAST], service.channel), providers)


@pytest.mark.parametrize("model", ["ordered", "weighted", "least-latency", "least-busy"])
@pytest.mark.parametrize("stream", [False, True])
async def test_every_routing_names_the_provider_that_answered(
    routed: Routed, model: str, stream: bool
) -> None:
    seen = Counter([await routed.provider_of(model, stream) for _ in range(8)])
    assert set(seen) <= {FAST, SLOW}
    assert seen.total() == 8
    calls = await routed.chat_calls()
    assert calls == {FAST: seen[FAST], SLOW: seen[SLOW]}  # the header tells the truth


async def test_ordered_sends_everything_to_the_first_target(routed: Routed) -> None:
    assert {await routed.provider_of("ordered") for _ in range(20)} == {FAST}


async def test_weighted_spreads_requests_by_weight(routed: Routed) -> None:
    requests = 300
    seen: Counter[str] = Counter()
    for _ in range(requests // 20):  # some at a time: quicker, and still many draws
        seen.update(await asyncio.gather(*(routed.provider_of("weighted") for _ in range(20))))
    assert 0.60 <= seen[FAST] / requests <= 0.90  # 3:1 is 75 %
    assert await routed.chat_calls() == {FAST: seen[FAST], SLOW: seen[SLOW]}


async def test_least_latency_prefers_the_faster_provider(routed: Routed) -> None:
    routed.providers[SLOW].knobs.latency_ms = 300
    # Each target is measured once (an unmeasured one is tried first), then the faster wins.
    first = [await routed.provider_of("least-latency") for _ in range(2)]
    assert sorted(first) == [FAST, SLOW]
    after = Counter([await routed.provider_of("least-latency") for _ in range(20)])
    assert after == {FAST: 20}
    # When the fast one slows down beyond the other, the order turns over.
    routed.providers[FAST].knobs.latency_ms = 600
    routed.providers[SLOW].knobs.latency_ms = 0
    turned = [await routed.provider_of("least-latency") for _ in range(8)]
    assert turned[-3:] == [SLOW] * 3


async def test_least_busy_spreads_concurrent_slow_requests(routed: Routed) -> None:
    for provider in routed.providers.values():
        provider.knobs.latency_ms = 300
    seen = Counter(await asyncio.gather(*(routed.provider_of("least-busy") for _ in range(10))))
    assert min(seen[FAST], seen[SLOW]) >= 4, seen
    # The same burst under ordered routing all lands on the first target.
    ordered = Counter(await asyncio.gather(*(routed.provider_of("ordered") for _ in range(10))))
    assert ordered == {FAST: 10}


async def test_least_busy_counts_a_stream_in_flight_until_it_ends(routed: Routed) -> None:
    routed.providers[FAST].knobs.chunk_delay_ms = 200
    body = {"model": "least-busy", "messages": HELLO, "stream": True}
    call = routed.router.openai.CreateChatCompletion(
        openai_pb2.CreateChatCompletionRequest(body={"data": json.dumps(body).encode()})
    )
    replies = call.__aiter__()
    await replies.__anext__()  # the stream from the fast provider is open and under way
    assert dict((await call.initial_metadata()) or ())["x-llmproxy-provider"] == FAST
    assert await routed.provider_of("least-busy") == SLOW
    rest = [reply async for reply in replies]
    assert rest  # the stream went on to its end
    assert await routed.provider_of("least-busy") == FAST  # and no longer counts
