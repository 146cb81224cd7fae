"""A real redis-server on a free loopback port: for the session (sync), or for one test that
kills and restarts it (async, its log attached to the test when it fails)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import pytest

from llmproxy.devstack.process import ManagedProcess
from llmproxy.devstack.redis import redis_process
from tests.harness import logs
from tests.harness.ports import free_port


@contextmanager
def redis_server(workdir: Path) -> Iterator[tuple[str, ManagedProcess]]:
    """Start a durable redis-server; yields its URL and process, stops it after."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    process = redis_process(url, workdir, workdir / "redis.log")
    process.start()
    try:
        asyncio.run(process.wait_ready(15))
        yield url, process
    finally:
        process.stop()


@asynccontextmanager
async def own_redis(
    workdir: Path, request: pytest.FixtureRequest, name: str = "redis"
) -> AsyncIterator[tuple[str, ManagedProcess]]:
    """A durable redis-server of one test's own (in workdir/name), to kill and restart; yields
    its URL and process once it answers, stops it after."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    process = redis_process(url, workdir / name, workdir / f"{name}.log", name=name)
    logs.watch(request.node, process)
    process.start()
    try:
        await process.wait_ready(15)
        yield url, process
    finally:
        process.stop()
