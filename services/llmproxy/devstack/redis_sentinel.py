"""A primary, a replica and the sentinels of a Sentinel URL, from the one redis-server binary.

What `make up` starts for a loopback `redis+sentinel://` URL, and what the tests fail over:
the sentinels listen where the URL says; the primary and its replica take the two ports after
the last sentinel's (26379,26380,26381 -> 26382 primary, 26383 replica). Both data nodes are
durable (DURABILITY_ARGS). The sentinels agree with a quorum of two and call a primary down
after one second without an answer, so a failover takes a few seconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from pathlib import Path

import redis.asyncio as aioredis

from llmproxy.common.settings import SentinelURL, parse_sentinel_url
from llmproxy.devstack.binaries import find_binary
from llmproxy.devstack.process import ManagedProcess
from llmproxy.devstack.redis import redis_process

DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 5000


def data_ports(url: SentinelURL) -> tuple[int, int]:
    """The primary's and the replica's ports: the two after the last sentinel's."""
    last = max(port for _, port in url.sentinels)
    return last + 1, last + 2


async def sentinel_knows_primary(host: str, port: int, primary: str) -> bool:
    """True when the sentinel answers and names an address for primary."""
    client = aioredis.Redis(host=host, port=port, socket_timeout=1.0, socket_connect_timeout=1.0)
    try:
        address = await client.sentinel_get_master_addr_by_name(primary)
        return bool(address)
    except (aioredis.RedisError, OSError):
        return False
    finally:
        await client.aclose()


def _sentinel(
    binary: str,
    url: SentinelURL,
    *,
    port: int,
    primary_port: int,
    workdir: Path,
    environ: Mapping[str, str] | None,
) -> ManagedProcess:
    folder = workdir / f"sentinel-{port}"
    folder.mkdir(parents=True, exist_ok=True)
    # Sentinel rewrites its config file as it learns the topology: one file each, ours alone.
    config = folder / "sentinel.conf"
    config.write_text(
        f"port {port}\n"
        "bind 127.0.0.1\n"
        f"dir {folder}\n"
        f"sentinel monitor {url.primary} 127.0.0.1 {primary_port} 2\n"
        f"sentinel down-after-milliseconds {url.primary} {DOWN_AFTER_MS}\n"
        f"sentinel failover-timeout {url.primary} {FAILOVER_TIMEOUT_MS}\n"
        f"sentinel parallel-syncs {url.primary} 1\n"
    )
    ready = partial(sentinel_knows_primary, "127.0.0.1", port, url.primary)
    argv = [binary, str(config), "--sentinel"]
    return ManagedProcess(f"sentinel-{port}", argv, folder / "sentinel.log", ready, environ)


async def start_topology(
    primary: ManagedProcess,
    replica: ManagedProcess,
    sentinels: list[ManagedProcess],
    timeout_s: float = 15.0,
) -> None:
    """Start the primary, then its replica, then the sentinels, each group once ready."""
    for group in ([primary], [replica], sentinels):
        for process in group:
            process.start()
        for process in group:
            await process.wait_ready(timeout_s)


def sentinel_topology(
    url: str,
    workdir: Path,
    environ: Mapping[str, str] | None = None,
    ports: tuple[int, int] | None = None,
) -> tuple[ManagedProcess, ManagedProcess, list[ManagedProcess]]:
    """The primary, its replica and the sentinels of url, not started yet; ports are the
    primary's and the replica's (default: data_ports).

    Start the primary first, then the replica and the sentinels.
    """
    parsed = parse_sentinel_url(url)
    binary = find_binary("redis-server", "install it with: apt-get install -y redis-server")
    primary_port, replica_port = ports or data_ports(parsed)
    primary = redis_process(
        f"redis://127.0.0.1:{primary_port}/0",
        workdir / "redis-primary",
        workdir / "redis-primary" / "redis.log",
        environ,
        name="redis-primary",
    )
    replica = redis_process(
        f"redis://127.0.0.1:{replica_port}/0",
        workdir / "redis-replica",
        workdir / "redis-replica" / "redis.log",
        environ,
        name="redis-replica",
        replica_of=primary_port,
    )
    sentinels = [
        _sentinel(
            binary, parsed, port=port, primary_port=primary_port, workdir=workdir, environ=environ
        )
        for _, port in parsed.sentinels
    ]
    return primary, replica, sentinels
