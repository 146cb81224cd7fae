"""The router follows the health service: it skips an unhealthy target without calling it,
reports every call so that circuits open on real failures, and keeps serving without it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import httpx
import pytest

from llmproxy._gen.health.v1 import health_pb2
from llmproxy._gen.router.v1 import openai_pb2, openai_pb2_grpc
from llmproxy.common.server import RunningServer
from llmproxy.config import StackConfig
from llmproxy.health.server import serve as serve_health
from llmproxy.router.server import serve as serve_router
from tests.harness.fake_provider import RunningProvider, fake_provider
from tests.harness.ports import free_port
from tests.integration.health.conftest import HealthService, eventually

pytestmark = pytest.mark.integration

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def stack(redis_url: str, first: str, second: str, health_port: int, **health: Any) -> StackConfig:
    return StackConfig.model_validate(
        {
            "redis": {"url": redis_url},
            "services": {
                "router": {"grpc_port": 0, "metrics_port": 0, "via_egress": False},
                "ratelimit": {"grpc_port": 0, "metrics_port": 0},
                "authz": {"grpc_port": 0, "metrics_port": 0},
                "fault": {"grpc_port": 0, "metrics_port": 0},
                "health": {
                    "grpc_port": health_port,
                    "metrics_port": 0,
                    "sync_interval_s": 0.05,
                    "client": {
                        "report_interval_s": 0.05,
                        "stale_after_s": 1.0,
                        "reconnect_max_s": 0.5,
                    },
                    **health,
                },
            },
            "providers": [
                {"name": "first", "base_url": f"{first}/v1", "api_key_env": None},
                {"name": "second", "base_url": f"{second}/v1", "api_key_env": None},
            ],
            "models": [
                {
                    "name": "m",
                    "targets": [
                        {"provider": "first", "model": "fake-gpt"},
                        {"provider": "second", "model": "fake-gpt"},
                    ],
                }
            ],
        }
    )


@dataclass
class Setup:
    first: RunningProvider
    second: RunningProvider
    config: StackConfig
    health: HealthService
    router: RunningServer
    channel: grpc.aio.Channel

    async def chat(self) -> str:
        """The provider that answered a chat completion through the router."""
        call = openai_pb2_grpc.OpenAIServiceStub(self.channel).CreateChatCompletion(
            openai_pb2.CreateChatCompletionRequest(body={"data": json.dumps(CHAT).encode()})
        )
        replies = [r.data async for r in call]
        metadata = dict((await call.initial_metadata()) or ())
        assert "choices" in json.loads(replies[0]), replies
        return str(metadata["x-llmproxy-provider"])

    async def start_health(self) -> None:
        running = await serve_health(self.config)
        self.health = HealthService(
            running, grpc.aio.insecure_channel(f"127.0.0.1:{running.port}"), self.config
        )


async def chat_calls(provider: RunningProvider) -> int:
    async with httpx.AsyncClient() as client:
        stats = (await client.get(f"{provider.url}/_fake/stats")).json()
    return int(stats["requests"].get("/v1/chat/completions", 0))


async def start(redis_url: str, **health: Any) -> AsyncIterator[Setup]:
    async with fake_provider(["fake-gpt"]) as first, fake_provider(["fake-gpt"]) as second:
        config = stack(redis_url, first.url, second.url, free_port(), **health)
        running = await serve_health(config)
        service = HealthService(
            running, grpc.aio.insecure_channel(f"127.0.0.1:{running.port}"), config
        )
        setup: Setup | None = None
        try:
            router = await serve_router(config)
            channel = grpc.aio.insecure_channel(f"127.0.0.1:{router.port}")
            setup = Setup(first, second, config, service, router, channel)
            try:
                yield setup
            finally:
                await channel.close()
                await router.stop(None)
        finally:
            # Even if the router failed to start or stop: a health service left running keeps
            # its Redis connections past the test's event loop. The test may have restarted it.
            current = service if setup is None else setup.health
            await current.channel.close()
            await current.running.stop(None)


@pytest.fixture
async def setup(redis_process: str, redis_client: Any) -> AsyncIterator[Setup]:
    async for found in start(redis_process):
        yield found


def answered_by_first(setup: Setup) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await setup.chat() == "first"

    return check


async def until_router_skips(setup: Setup, provider: RunningProvider) -> None:
    """Wait until a chat is answered without a call to provider (the router got the news)."""
    async with asyncio.timeout(10):
        while True:
            before = await chat_calls(provider)
            await setup.chat()
            if await chat_calls(provider) == before:
                return
            await asyncio.sleep(0.05)


async def test_an_unhealthy_target_is_skipped_without_a_call(setup: Setup) -> None:
    assert await setup.chat() == "first"
    setup.first.knobs.outage = "hang"
    await setup.health.wait_for("first", "unhealthy", within_s=5)
    await until_router_skips(setup, setup.first)
    before = await chat_calls(setup.first)
    answered_by = [await setup.chat() for _ in range(10)]
    assert answered_by == ["second"] * 10
    assert await chat_calls(setup.first) == before  # not one round trip to the hanging provider
    setup.first.knobs.outage = "none"
    await setup.health.wait_for("first", "healthy", within_s=10)
    await eventually(answered_by_first(setup), 5, "the router calls first again")


async def test_every_target_unavailable_still_tries_them_in_order(setup: Setup) -> None:
    for name in ("first", "second"):
        await setup.health.api.SetMaintenance(
            health_pb2.SetMaintenanceRequest(name=name, maintenance=True)
        )
    await asyncio.sleep(0.3)  # the router got both states
    assert await setup.chat() == "first"  # rather than failing outright


async def test_the_router_keeps_serving_without_the_health_service(setup: Setup) -> None:
    await setup.health.api.SetMaintenance(
        health_pb2.SetMaintenanceRequest(name="first", maintenance=True)
    )
    await until_router_skips(setup, setup.first)
    await setup.health.channel.close()
    await setup.health.running.stop(None)
    # Last known state first (first still drained), then after stale_after_s (1 s) every
    # provider counts as available again.
    assert await setup.chat() == "second"
    await eventually(answered_by_first(setup), 10, "stale states dropped")
    await setup.start_health()  # back (on the same port): the router follows it again
    await until_router_skips(setup, setup.first)


async def test_reported_failures_open_the_circuit_and_the_router_stops_calling(
    redis_process: str, redis_client: Any
) -> None:
    # Probes only at startup: the circuit alone must find the failing provider.
    async for setup in start(redis_process, probe={"interval_s": 3600}):
        setup.first.knobs.error_rate = 1.0
        setup.first.knobs.error_status = 500
        async with asyncio.timeout(10):
            while (await setup.health.provider("first")).circuit != health_pb2.CIRCUIT_STATE_OPEN:
                assert await setup.chat() == "second"
        provider = await setup.health.provider("first")
        assert provider.reason == "circuit open: 5 failed calls in a row"
        await until_router_skips(setup, setup.first)
