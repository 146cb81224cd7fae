"""A real 3-master Redis Cluster from redis-server, on free loopback ports.

Reusable by any test that needs a cluster (the rate limiter's counters, the router's cache):

    with redis_cluster(tmp_path) as cluster:
        client = RedisCluster.from_url(cluster.url)

The masters are created with `redis-cli --cluster create` (no replicas), and the context
manager yields once every node reports cluster_state:ok; all nodes are stopped after.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from llmproxy.devstack.binaries import find_binary
from llmproxy.devstack.probes import redis_pong
from llmproxy.devstack.process import ManagedProcess, StartupError
from llmproxy.devstack.redis import DURABILITY_ARGS
from tests.harness.ports import free_port
from tests.harness.waiting import eventually_sync

MASTERS = 3


@dataclass(frozen=True)
class RedisClusterNodes:
    """A running cluster: a URL for cluster clients (any node will do) and its processes."""

    url: str
    ports: tuple[int, ...]
    processes: tuple[ManagedProcess, ...]


def _node(workdir: Path, port: int) -> ManagedProcess:
    binary = find_binary("redis-server", "install it with: apt-get install -y redis-server")
    data = workdir / f"node-{port}"
    data.mkdir(parents=True, exist_ok=True)
    argv = [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--cluster-enabled",
        "yes",
        # The bus port is free too (its default, port + 10000, may be taken or out of range).
        "--cluster-port",
        str(free_port()),
        "--cluster-config-file",
        "nodes.conf",
        "--cluster-node-timeout",
        "2000",
        *DURABILITY_ARGS,
        "--dir",
        str(data),
    ]
    url = f"redis://127.0.0.1:{port}/0"
    return ManagedProcess(
        f"redis-cluster-{port}", argv, data / "redis.log", partial(redis_pong, url)
    )


def _cluster_ok(redis_cli: str, port: int) -> bool:
    done = subprocess.run(
        [redis_cli, "-p", str(port), "cluster", "info"],
        capture_output=True,
        text=True,
        timeout=5,
        check=False,
    )
    return "cluster_state:ok" in done.stdout


@contextmanager
def redis_cluster(workdir: Path, timeout_s: float = 30.0) -> Iterator[RedisClusterNodes]:
    """Start MASTERS cluster-enabled redis-servers, join them, wait for cluster_state:ok."""
    redis_cli = shutil.which("redis-cli")
    if redis_cli is None:
        raise StartupError("redis-cli not found; install it with: apt-get install -y redis-tools")
    ports = tuple(free_port() for _ in range(MASTERS))
    nodes = tuple(_node(workdir, port) for port in ports)
    with ExitStack() as stack:
        for node in nodes:
            node.start()
            stack.callback(node.stop)

        async def ready() -> None:
            await asyncio.gather(*(node.wait_ready(15) for node in nodes))

        asyncio.run(ready())
        create = subprocess.run(
            [
                redis_cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{port}" for port in ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if create.returncode != 0:
            raise StartupError(
                f"redis-cli --cluster create failed:\n{create.stdout}{create.stderr}"
            )
        eventually_sync(
            lambda: [_cluster_ok(redis_cli, port) for port in ports],
            all,
            what=f"cluster_state:ok on every node after:\n{create.stdout}",
            timeout_s=timeout_s,
            interval_s=0.1,
        )
        yield RedisClusterNodes(f"redis://127.0.0.1:{ports[0]}/0", ports, nodes)
