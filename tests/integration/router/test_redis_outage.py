"""Redis dies under load: answers keep coming uncached; caching resumes when it is back."""

from __future__ import annotations

import asyncio
import signal
from contextlib import AsyncExitStack
from pathlib import Path
from uuid import uuid4

import pytest

from llmproxy.devstack.redis import redis_process
from tests.harness import logs
from tests.harness.ports import free_port
from tests.harness.waiting import eventually
from tests.integration.router.conftest import StartRouter

CACHED = {"model": "gpt", "messages": [{"role": "user", "content": "outage"}], "temperature": 0}


async def test_redis_killed_and_restarted_under_load(
    start_router: StartRouter, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    redis = redis_process(url, tmp_path / "redis", tmp_path / "redis.log")
    logs.watch(request.node, redis)
    async with AsyncExitStack() as stack:
        redis.start()
        stack.callback(redis.stop)
        await redis.wait_ready(15)
        router = await start_router(url, cache={"redis_backoff_s": 0.2})
        statuses: list[str] = []
        stop = asyncio.Event()

        async def load() -> None:
            while not stop.is_set():
                metadata, replies = await router.chat(CACHED)
                statuses.append(metadata.get("x-llmproxy-status", "200"))
                assert replies

        async def answered(count: int) -> None:
            target = len(statuses) + count
            await eventually(
                lambda: len(statuses), lambda found: found >= target, what=f"{count} answers"
            )

        async def caching() -> list[str]:
            """Whether a prompt of its own is cached: MISS, then HIT once Redis is back."""
            body = {**CACHED, "messages": [{"role": "user", "content": f"probe {uuid4()}"}]}
            return [(await router.chat(body))[0]["x-cache"] for _ in range(2)]

        assert (await router.chat(CACHED))[0]["x-cache"] == "MISS"
        assert (await router.chat(CACHED))[0]["x-cache"] == "HIT"
        workers = [asyncio.create_task(load()) for _ in range(10)]
        stack.push_async_callback(asyncio.gather, *workers, return_exceptions=True)
        stack.callback(stop.set)
        await answered(10)
        redis.signal(signal.SIGKILL)
        await answered(20)  # the load goes on through the outage
        alone = {**CACHED, "messages": [{"role": "user", "content": "only me"}]}
        down = [(await router.chat(alone))[0]["x-cache"] for _ in range(2)]
        redis.start()  # the same port, empty (no persistence)
        await redis.wait_ready(15)
        await eventually(caching, lambda found: found == ["MISS", "HIT"], what="caching back")
        stop.set()
        await asyncio.gather(*workers)
        # A prompt of its own: a write of `alone` still retrying when Redis came back may
        # have landed, so `alone` could already be a hit.
        after = {**CACHED, "messages": [{"role": "user", "content": "after"}]}
        back = [(await router.chat(after))[0]["x-cache"] for _ in range(2)]
    assert set(statuses) == {"200"}
    assert len(statuses) > 20
    assert down == ["MISS", "MISS"]  # answered by the provider, nothing cached
    assert back == ["MISS", "HIT"]  # caching came back by itself
