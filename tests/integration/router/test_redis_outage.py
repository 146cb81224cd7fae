"""Redis dies under load: answers keep coming uncached; caching resumes when it is back."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import grpc
import pytest

from llmproxy.devstack.redis import redis_process
from llmproxy.router.server import serve
from tests.harness import logs
from tests.harness.fake_provider import fake_provider
from tests.harness.ports import free_port
from tests.integration.router.conftest import Router, router_config

pytestmark = pytest.mark.integration

CACHED = {"model": "gpt", "messages": [{"role": "user", "content": "outage"}], "temperature": 0}


async def test_redis_killed_and_restarted_under_load(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    redis = redis_process(url, tmp_path / "redis", tmp_path / "redis.log")
    logs.watch(request.node, redis)
    redis.start()
    await redis.wait_ready(15)
    async with fake_provider(["fake-gpt", "fake-claude", "fake-embed"]) as provider:
        server = await serve(router_config(url, provider.url, cache={"redis_backoff_s": 0.2}))
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
        router = Router(server, provider, channel)
        statuses: list[str] = []
        stop = asyncio.Event()

        async def load() -> None:
            while not stop.is_set():
                metadata, replies = await router.chat(CACHED)
                statuses.append(metadata.get("x-llmproxy-status", "200"))
                assert replies

        try:
            assert (await router.chat(CACHED))[0]["x-cache"] == "MISS"
            assert (await router.chat(CACHED))[0]["x-cache"] == "HIT"
            workers = [asyncio.create_task(load()) for _ in range(10)]
            await asyncio.sleep(0.3)
            redis.signal(signal.SIGKILL)
            await asyncio.sleep(1.0)
            alone = {**CACHED, "messages": [{"role": "user", "content": "only me"}]}
            down = [(await router.chat(alone))[0]["x-cache"] for _ in range(2)]
            redis.start()  # the same port, empty (no persistence)
            await redis.wait_ready(15)
            await asyncio.sleep(0.5)  # past the cache's backoff
            stop.set()
            await asyncio.gather(*workers)
            # A prompt of its own: a write of `alone` still retrying when Redis came back may
            # have landed, so `alone` could already be a hit.
            after = {**CACHED, "messages": [{"role": "user", "content": "after"}]}
            back = [(await router.chat(after))[0]["x-cache"] for _ in range(2)]
        finally:
            stop.set()
            await channel.close()
            await server.stop(None)
            redis.stop()
    assert set(statuses) == {"200"}
    assert len(statuses) > 20
    assert down == ["MISS", "MISS"]  # answered by the provider, nothing cached
    assert back == ["MISS", "HIT"]  # caching came back by itself
