"""The registry of service instances in Redis: who runs, where its chaos agent answers.

Every service instance registers itself (service, instance id, gRPC address, pid) and renews
the entry every `HEARTBEAT_S`; an entry not renewed within `TTL_S` is no longer listed, so a
killed instance drops out by itself. The fault leader reads it to pick a kill_instance victim
and to stress every instance of a service, and calls their agents at their addresses: nothing
depends on local pids or on running on the same machine (on Kubernetes the address is the
pod's, from `LLMPROXY_POD_IP`). The rate limiter counts its own instances in it
(common.live_count).

Per service, one set of `common.heartbeats` entries: instance id -> the instance as JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

from redis.exceptions import RedisError

from llmproxy.common.heartbeats import HeartbeatEntries, raise_if_cancelled
from llmproxy.common.redis import AnyRedis

log = logging.getLogger(__name__)

PREFIX = "llmproxy:chaos"
HEARTBEAT_S = 1.0
TTL_S = 4.0
POD_IP_ENV = "LLMPROXY_POD_IP"


@dataclass(frozen=True)
class Instance:
    """One registered service instance."""

    service: str
    instance_id: str
    address: str
    pid: int


def new_instance_id(service: str) -> str:
    """A fresh id for one process of service: a restarted process never reuses one."""
    return f"{service}-{uuid.uuid4().hex[:12]}"


def advertised_host(host: str, environ: Mapping[str, str] = os.environ) -> str:
    """The host other instances reach this one at: the pod's IP where set, else host."""
    return environ.get(POD_IP_ENV) or host


def _entries(redis: AnyRedis, service: str, clock: Callable[[], float]) -> HeartbeatEntries:
    return HeartbeatEntries(redis, f"{PREFIX}:{service}", values="instances", clock=clock)


class InstanceRegistry:
    """Reads and writes the registry."""

    def __init__(self, redis: AnyRedis, clock: Callable[[], float] = time.time) -> None:
        self._redis = redis
        self._clock = clock

    async def register(self, instance: Instance, ttl_s: float = TTL_S) -> None:
        """Add or renew an instance's entry (RedisError passes through)."""
        entries = _entries(self._redis, instance.service, self._clock)
        await entries.put(instance.instance_id, json.dumps(asdict(instance)), ttl_s)

    async def deregister(self, instance: Instance) -> None:
        """Remove an instance's entry (a clean shutdown)."""
        await _entries(self._redis, instance.service, self._clock).remove(instance.instance_id)

    async def count(self, service: str) -> int:
        """How many instances of service have a current entry (one call, nothing swept)."""
        return await _entries(self._redis, service, self._clock).count()

    async def live(self, service: str) -> list[Instance]:
        """The instances of service whose entry is current, by id; expired ones are swept."""
        found = await _entries(self._redis, service, self._clock).live()
        return [Instance(**json.loads(raw)) for raw in found.values()]


async def heartbeat(registry: InstanceRegistry, instance: Instance) -> None:
    """Keep an instance registered until cancelled, then deregister it (best effort)."""
    try:
        while True:
            try:
                await registry.register(instance)
            except (RedisError, OSError) as exc:
                log.debug("instance registry unreachable", extra={"error": str(exc)})
            raise_if_cancelled()
            await asyncio.sleep(HEARTBEAT_S)
    finally:
        # Gone from the registry at once rather than after TTL_S: no kill is aimed at it.
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            async with asyncio.timeout(1.0):
                await registry.deregister(instance)
