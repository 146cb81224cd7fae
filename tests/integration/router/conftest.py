"""The router in process on a free port, over a real Redis and the fake provider over HTTP."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from llmproxy._gen.router.v1 import openai_pb2, openai_pb2_grpc, router_pb2_grpc
from llmproxy.common.server import RunningServer
from llmproxy.config import StackConfig
from llmproxy.router.providers import sse
from llmproxy.router.server import serve
from tests.harness.fake_provider import RunningProvider, fake_provider
from tests.harness.services import served

ANTHROPIC_KEY_ENV = "LLMPROXY_TEST_ANTHROPIC_KEY"


def router_config(redis_url: str, provider_url: str, **router: Any) -> StackConfig:
    """Two providers on the one fake server: OpenAI-style and Anthropic-style."""
    return StackConfig.model_validate(
        {
            "redis": {"url": redis_url},
            "services": {
                "router": {"grpc_port": 0, "metrics_port": 0, "via_egress": False, **router}
            },
            "providers": [
                {
                    "name": "oai",
                    "kind": "openai",
                    "base_url": f"{provider_url}/v1",
                    "api_key_env": None,
                },
                {
                    "name": "claude",
                    "kind": "anthropic",
                    "base_url": f"{provider_url}/v1",
                    "api_key_env": ANTHROPIC_KEY_ENV,
                },
            ],
            "models": [
                {
                    "name": "gpt",
                    "aliases": ["gpt-latest"],
                    "targets": [{"provider": "oai", "model": "fake-gpt"}],
                    "input_usd_per_mtok": 1.0,
                    "output_usd_per_mtok": 2.0,
                },
                {"name": "claude", "targets": [{"provider": "claude", "model": "fake-claude"}]},
                {"name": "embed", "targets": [{"provider": "oai", "model": "fake-embed"}]},
                {
                    "name": "claude-then-gpt",
                    "targets": [
                        {"provider": "claude", "model": "fake-claude"},
                        {"provider": "oai", "model": "fake-gpt"},
                    ],
                },
            ],
        }
    )


@dataclass
class Router:
    """A running router and clients of its APIs."""

    server: RunningServer
    provider: RunningProvider
    channel: grpc.aio.Channel

    @property
    def openai(self) -> openai_pb2_grpc.OpenAIServiceStub:
        return openai_pb2_grpc.OpenAIServiceStub(self.channel)

    @property
    def control(self) -> router_pb2_grpc.RouterServiceStub:
        return router_pb2_grpc.RouterServiceStub(self.channel)

    async def chat(
        self, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> tuple[dict[str, str], list[bytes]]:
        call = self.openai.CreateChatCompletion(
            openai_pb2.CreateChatCompletionRequest(body={"data": json.dumps(body).encode()}),
            metadata=tuple((headers or {}).items()),
        )
        replies: list[bytes] = []
        async for reply in call:
            # Stream events that arrived together come in one message: tests read them singly.
            stream = reply.content_type == "text/event-stream"
            replies.extend(sse.split(reply.data) if stream else [reply.data])
        metadata = dict((await call.initial_metadata()) or ())
        return metadata, replies


StartRouter = Callable[..., Awaitable[Router]]


@pytest.fixture
async def start_router(
    redis_process: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[StartRouter]:
    """Starts routers, each over its own fake provider (both kinds) and the Redis at redis_url
    (the session's by default); router settings override the defaults."""
    monkeypatch.setenv(ANTHROPIC_KEY_ENV, "test-anthropic-key")
    async with AsyncExitStack() as stack:

        async def start(
            redis_url: str | None = None, *, cluster: bool = False, **router: Any
        ) -> Router:
            provider = await stack.enter_async_context(
                fake_provider(["fake-gpt", "fake-claude", "fake-embed"])
            )
            config = router_config(redis_url or redis_process, provider.url, **router)
            if cluster:
                redis = config.redis.model_copy(update={"cluster": True})
                config = config.model_copy(update={"redis": redis})
            service = await stack.enter_async_context(served(serve(config)))
            return Router(service.running, provider, service.channel)

        yield start


@pytest.fixture
async def router(start_router: StartRouter, redis_client: Any) -> Router:
    """A router with a fresh cache (the session Redis is flushed per test)."""
    return await start_router()
