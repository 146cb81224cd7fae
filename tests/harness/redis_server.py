"""A real redis-server on a free loopback port."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

from llmproxy.devstack.probes import redis_pong
from llmproxy.devstack.process import ManagedProcess
from llmproxy.devstack.stack import find_binary
from tests.harness.ports import free_port


@contextmanager
def redis_server(workdir: Path) -> Iterator[tuple[str, ManagedProcess]]:
    """Start redis-server without persistence; yields its URL and process, stops it after."""
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    binary = find_binary("redis-server", "apt-get install -y redis-server")
    argv = [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(workdir),
    ]
    process = ManagedProcess("redis", argv, workdir / "redis.log", partial(redis_pong, url))
    process.start()
    try:
        asyncio.run(process.wait_ready(15))
        yield url, process
    finally:
        process.stop()
