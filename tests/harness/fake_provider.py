"""The bundled fake provider, in process on 127.0.0.1 port 0, with live knobs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from aiohttp import web

from llmproxy.fakeprovider.app import build_app
from llmproxy.fakeprovider.knobs import Knobs
from llmproxy.fakeprovider.responses import DEFAULT_MODELS


@dataclass
class RunningProvider:
    """Where the fake provider listens, and its live knobs."""

    url: str
    knobs: Knobs

    async def stats(self) -> dict[str, Any]:
        """What it has seen so far, as ``GET /_fake/stats`` tells."""
        async with httpx.AsyncClient(trust_env=False) as client:
            found: dict[str, Any] = (await client.get(f"{self.url}/_fake/stats")).json()
        return found

    async def requests(self, path: str) -> int:
        """Requests to path (e.g. ``/v1/models``, which health probes call) so far."""
        return int((await self.stats())["requests"].get(path, 0))


@asynccontextmanager
async def fake_provider(models: Sequence[str] = DEFAULT_MODELS) -> AsyncIterator[RunningProvider]:
    """Serve the fake provider until the block ends; yields once it accepts connections."""
    knobs = Knobs()
    # A short shutdown timeout: a test that leaves a stream open should not stall teardown.
    runner = web.AppRunner(build_app(knobs, list(models)), shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield RunningProvider(url=f"http://{host}:{port}", knobs=knobs)
    finally:
        await runner.cleanup()
