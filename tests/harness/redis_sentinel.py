"""A primary, a replica and three sentinels on free loopback ports (devstack.redis_sentinel)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from llmproxy.devstack.process import ManagedProcess
from llmproxy.devstack.redis_sentinel import sentinel_topology, start_topology
from tests.harness import logs
from tests.harness.ports import free_port

PRIMARY_NAME = "llmproxy"


@dataclass
class SentinelRedis:
    """The running topology and the URL clients use."""

    url: str
    primary: ManagedProcess
    replica: ManagedProcess
    sentinels: list[ManagedProcess]
    primary_port: int
    replica_port: int


@asynccontextmanager
async def sentinel_redis(
    workdir: Path, request: pytest.FixtureRequest
) -> AsyncIterator[SentinelRedis]:
    """Start the topology, yield it once every sentinel knows the primary, stop it after."""
    sentinel_ports = [free_port() for _ in range(3)]
    url = f"redis+sentinel://{','.join(f'127.0.0.1:{p}' for p in sentinel_ports)}/{PRIMARY_NAME}/0"
    ports = (free_port(), free_port())
    primary, replica, sentinels = sentinel_topology(url, workdir, ports=ports)
    everything = [primary, replica, *sentinels]
    logs.watch(request.node, *everything)
    try:
        await start_topology(primary, replica, sentinels)
        yield SentinelRedis(url, primary, replica, sentinels, *ports)
    finally:
        for process in reversed(everything):
            process.stop()
