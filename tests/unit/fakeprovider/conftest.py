"""A fake provider on 127.0.0.1, port 0, and clients for it; all closed after each test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import openai
import pytest

from tests.harness.fake_provider import RunningProvider, fake_provider


@pytest.fixture
async def provider() -> AsyncIterator[RunningProvider]:
    """A fake provider serving the default models; yields once it accepts connections."""
    async with fake_provider() as running:
        yield running


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
