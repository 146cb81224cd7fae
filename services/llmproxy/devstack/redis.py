"""redis-server processes: the stack's (durable) and the response cache's (disposable)."""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

from llmproxy.devstack.binaries import find_binary
from llmproxy.devstack.probes import redis_pong, redis_replica_linked
from llmproxy.devstack.process import ManagedProcess

# Every Redis we start keeps its data across restarts (API keys, audit records, experiments and
# usage live there): an append-only file in its data folder, fsynced every second, so a crash
# loses at most about a second of writes. No RDB snapshots: the AOF alone restores everything.
DURABILITY_ARGS = ("--appendonly", "yes", "--appendfsync", "everysec", "--save", "")


# The response cache's Redis keeps nothing across restarts: entries are answers it can fetch
# again, and not writing them to disk spares the cache's every write.
DISPOSABLE_ARGS = ("--appendonly", "no", "--save", "")


def redis_process(
    url: str,
    data_dir: Path,
    log_path: Path,
    environ: Mapping[str, str] | None = None,
    *,
    durable: bool = True,
    name: str = "redis",
    replica_of: int | None = None,
) -> ManagedProcess:
    """A redis-server in data_dir on the loopback port of url: durable (DURABILITY_ARGS) unless
    told otherwise, so restarted on the same data_dir it comes back with every key it had."""
    binary = find_binary("redis-server", "install it with: apt-get install -y redis-server")
    data_dir.mkdir(parents=True, exist_ok=True)
    port = str(urlsplit(url).port or 6379)
    argv = [
        binary,
        "--port",
        port,
        "--bind",
        "127.0.0.1",
        *(DURABILITY_ARGS if durable else DISPOSABLE_ARGS),
        "--dir",
        str(data_dir),
        *(("--replicaof", "127.0.0.1", str(replica_of)) if replica_of is not None else ()),
    ]
    # A replica is ready once it has its primary's data, not merely once it answers.
    ready = redis_pong if replica_of is None else redis_replica_linked
    return ManagedProcess(name, argv, log_path, partial(ready, url), environ)
