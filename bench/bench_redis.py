"""Redis survival benchmark: how long a durable Redis takes to come back, and a Sentinel failover.

Starts its own redis-server processes on free loopback ports, as the project runs them
(devstack.redis, devstack.redis_sentinel). It prints one JSON document:

- `aof_restart`: `--keys` API-key-sized records written to a durable Redis, which is then
  killed with SIGKILL and restarted on its data folder; seconds until it answers PING with every
  key back, and the size of its append-only files;
- `failover`: a primary, a replica and three sentinels; a client of ours writes every 10 ms
  while the primary is killed with SIGKILL; seconds from the kill to the first write that
  succeeds again (on the promoted replica), over `--rounds` rounds.

The load average before and after is included: the machine may be shared.

    .venv/bin/python -m bench.bench_redis [--keys 100000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from llmproxy.common.net import free_port
from llmproxy.common.redis import connect_redis
from llmproxy.common.settings import RedisSettings
from llmproxy.devstack.redis import redis_process
from llmproxy.devstack.redis_sentinel import sentinel_topology, start_topology

RECORD = json.dumps(
    {"key_hash": "ab" * 32, "tenant": "acme", "user": "u", "labels": {}}
    | {"name": "a key of about the size of an API key record", "version": 1}
)
BATCH = 1000


async def _flushed_to_aof(client: aioredis.Redis, timeout_s: float = 30.0) -> None:
    # With appendfsync everysec Redis may hold writes in its AOF buffer for up to 2 s while a
    # background fsync runs; a kill then loses them (the documented ~1 s of durability). The
    # restart is measured with every key written out, so wait until the buffer is empty.
    deadline = time.monotonic() + timeout_s
    while True:
        info = await client.info("persistence")
        if not info.get("aof_buffer_length") and not info.get("aof_rewrite_in_progress"):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the AOF buffer did not drain in {timeout_s} s: {info}")
        await asyncio.sleep(0.05)


async def aof_restart(workdir: Path, keys: int) -> dict[str, Any]:
    """Write keys records, wait until Redis has written them to its append-only file, kill -9,
    restart on the same folder: seconds until all are back."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    process = redis_process(url, workdir / "aof", workdir / "aof.log")
    process.start()
    try:
        await process.wait_ready(15)
        client = aioredis.Redis.from_url(url, socket_timeout=10)
        for start in range(0, keys, BATCH):
            async with client.pipeline(transaction=False) as pipe:
                for index in range(start, min(start + BATCH, keys)):
                    pipe.set(f"llmproxy:authz:key:{{{index:016x}}}", RECORD)
                await pipe.execute()
        await _flushed_to_aof(client)
        await client.aclose()
        process.kill()
        started = time.monotonic()
        process.start()
        await process.wait_ready(120)
        client = aioredis.Redis.from_url(url, socket_timeout=10)
        count = await client.dbsize()
        ready_s = time.monotonic() - started
        await client.aclose()
    finally:
        process.stop()
    aof_bytes = sum(p.stat().st_size for p in (workdir / "aof").rglob("*.aof"))
    return {
        "keys": keys,
        "keys_back": count,
        "restart_to_ready_s": round(ready_s, 3),
        "aof_bytes": aof_bytes,
    }


async def one_failover(workdir: Path) -> float:
    """Seconds from killing the primary to the first successful write through Sentinel."""
    sentinels = [free_port() for _ in range(3)]
    url = f"redis+sentinel://{','.join(f'127.0.0.1:{p}' for p in sentinels)}/bench/0"
    primary, replica, watchers = sentinel_topology(url, workdir, ports=(free_port(), free_port()))
    everything = [primary, replica, *watchers]
    try:
        await start_topology(primary, replica, watchers)
        client = connect_redis(RedisSettings(url=url))
        await client.set("before", "1")
        primary.kill()
        killed = time.monotonic()
        while True:
            try:
                await client.set("after", "1")
                break
            except (RedisError, OSError):
                await asyncio.sleep(0.01)
        elapsed = time.monotonic() - killed
        await client.aclose()
        return elapsed
    finally:
        for process in reversed(everything):
            process.stop()


async def main(args: argparse.Namespace) -> dict[str, Any]:
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as folder:
        workdir = Path(folder)
        restart = await aof_restart(workdir, args.keys)
        failovers = [await one_failover(workdir / f"failover-{i}") for i in range(args.rounds)]
    return {
        "aof_restart": restart,
        "failover": {
            "kill_to_first_write_s": [round(s, 2) for s in failovers],
            "median_s": round(statistics.median(failovers), 2),
        },
        "load_before": load_before,
        "load_after": os.getloadavg(),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keys", type=int, default=100_000, help="records written before the kill")
    parser.add_argument("--rounds", type=int, default=3, help="failovers measured")
    print(json.dumps(asyncio.run(main(parser.parse_args())), indent=2))
