"""A fake provider on 127.0.0.1, port 0, and clients for it; all closed after each test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import openai
import pytest
from aiohttp import web

from llmproxy.fakeprovider.app import build_app
from llmproxy.fakeprovider.knobs import Knobs
from llmproxy.fakeprovider.responses import DEFAULT_MODELS


@dataclass
class RunningProvider:
    """Where the fake provider listens, and its live knobs."""

    url: str
    knobs: Knobs


@pytest.fixture
async def provider() -> AsyncIterator[RunningProvider]:
    """A fake provider serving the default models; yields once it accepts connections."""
    knobs = Knobs()
    # A short shutdown timeout: a test that leaves a stream open should not stall teardown.
    runner = web.AppRunner(build_app(knobs, list(DEFAULT_MODELS)), shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield RunningProvider(url=f"http://{host}:{port}", knobs=knobs)
    finally:
        await runner.cleanup()


@pytest.fixture
async def http(provider: RunningProvider) -> AsyncIterator[httpx.AsyncClient]:
    """A raw HTTP client with the provider as base URL."""
    async with httpx.AsyncClient(base_url=provider.url, timeout=10.0) as client:
        yield client


@pytest.fixture
async def sdk(provider: RunningProvider) -> AsyncIterator[openai.AsyncOpenAI]:
    """The official OpenAI SDK pointed at the provider, without retries so faults show."""
    async with openai.AsyncOpenAI(
        base_url=f"{provider.url}/v1", api_key="x", max_retries=0, timeout=10.0
    ) as client:
        yield client
