"""A real redis-server on a free loopback port."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from llmproxy.devstack.process import ManagedProcess
from llmproxy.devstack.redis import redis_process
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
