"""The router follows the health service: it skips an unhealthy target without calling it,
reports every call so that circuits open on real failures, and keeps serving without it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from llmproxy._gen.health.v1 import health_pb2
from llmproxy._gen.router.v1 import openai_pb2, openai_pb2_grpc
from llmproxy.config import StackConfig
from llmproxy.router.server import serve as serve_router
from tests.harness.fake_provider import RunningProvider, fake_provider
from tests.harness.ports import free_port
from tests.harness.services import Served, served
from tests.harness.waiting import eventually
from tests.integration.health.conftest import HealthService, health_service

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
    health_exits: AsyncExitStack = field(default_factory=AsyncExitStack)
    health: HealthService = field(init=False)
    router: Served = field(init=False)

    async def chat(self) -> str:
        """The provider that answered a chat completion through the router."""
        call = openai_pb2_grpc.OpenAIServiceStub(self.router.channel).CreateChatCompletion(
            openai_pb2.CreateChatCompletionRequest(body={"data": json.dumps(CHAT).encode()})
        )
        replies = [r.data async for r in call]
        metadata = dict((await call.initial_metadata()) or ())
        assert "choices" in json.loads(replies[0]), replies
        return str(metadata["x-llmproxy-provider"])

    async def stop_health(self) -> None:
        await self.health_exits.aclose()

    async def start_health(self) -> None:
        """Start the health service again (on the same port, from the config)."""
        self.health_exits = AsyncExitStack()
        self.health = await health_service(self.health_exits, self.config)


async def chat_calls(provider: RunningProvider) -> int:
    return await provider.requests("/v1/chat/completions")


@asynccontextmanager
async def start(redis_url: str, **health: Any) -> AsyncIterator[Setup]:
    """Two fake providers, the health service, and the router following it; all stopped after."""
    async with AsyncExitStack() as exits:
        first = await exits.enter_async_context(fake_provider(["fake-gpt"]))
        second = await exits.enter_async_context(fake_provider(["fake-gpt"]))
        setup = Setup(first, second, stack(redis_url, first.url, second.url, free_port(), **health))
        # Whichever health service runs at the end (the test may restart it) stops after the
        # router, which follows it.
        exits.push_async_callback(setup.stop_health)
        await setup.start_health()
        setup.router = await exits.enter_async_context(served(serve_router(setup.config)))
        yield setup


@pytest.fixture
async def setup(redis_process: str, redis_client: Any) -> AsyncIterator[Setup]:
    async with start(redis_process) as found:
        yield found


async def until_router_skips(setup: Setup, provider: RunningProvider) -> None:
    """Wait until a chat is answered without a call to provider (the router got the news)."""

    async def calls_during_a_chat() -> int:
        before = await chat_calls(provider)
        await setup.chat()
        return await chat_calls(provider) - before

    await eventually(
        calls_during_a_chat, lambda calls: calls == 0, what=f"a chat without calling {provider.url}"
    )


async def until_answered_by(setup: Setup, name: str, timeout_s: float) -> None:
    await eventually(
        setup.chat, lambda found: found == name, what=f"answered by {name}", timeout_s=timeout_s
    )


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
    await until_answered_by(setup, "first", timeout_s=5)  # the router calls first again


async def test_every_target_unavailable_still_tries_them_in_order(setup: Setup) -> None:
    await setup.health.api.SetMaintenance(
        health_pb2.SetMaintenanceRequest(name="first", maintenance=True)
    )
    await until_router_skips(setup, setup.first)  # the router knows first is drained
    await setup.health.api.SetMaintenance(
        health_pb2.SetMaintenanceRequest(name="second", maintenance=True)
    )
    # Once the router knows that second is drained too, it tries both in order rather than
    # failing outright: first answers again.
    await until_answered_by(setup, "first", timeout_s=5)


async def test_the_router_keeps_serving_without_the_health_service(setup: Setup) -> None:
    await setup.health.api.SetMaintenance(
        health_pb2.SetMaintenanceRequest(name="first", maintenance=True)
    )
    await until_router_skips(setup, setup.first)
    await setup.stop_health()
    # Last known state first (first still drained), then after stale_after_s (1 s) every
    # provider counts as available again.
    assert await setup.chat() == "second"
    await until_answered_by(setup, "first", timeout_s=10)  # stale states dropped
    await setup.start_health()  # back (on the same port): the router follows it again
    await until_router_skips(setup, setup.first)


async def test_reported_failures_open_the_circuit_and_the_router_stops_calling(
    redis_process: str, redis_client: Any
) -> None:
    # Probes only at startup: the circuit alone must find the failing provider.
    async with start(redis_process, probe={"interval_s": 3600}) as setup:
        setup.first.knobs.error_rate = 1.0
        setup.first.knobs.error_status = 500

        async def circuit_after_a_chat() -> int:
            assert await setup.chat() == "second"
            return int((await setup.health.provider("first")).circuit)

        await eventually(
            circuit_after_a_chat,
            lambda circuit: circuit == health_pb2.CIRCUIT_STATE_OPEN,
            what="first's circuit open",
        )
        provider = await setup.health.provider("first")
        assert provider.reason == "circuit open: 5 failed calls in a row"
        await until_router_skips(setup, setup.first)
