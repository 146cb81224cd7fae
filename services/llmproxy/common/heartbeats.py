"""Entries in Redis that live while their owner renews them: who is alive, and what it says.

An owner puts its entry (an id and a string) with a time to live and renews it by putting it
again; an entry not renewed in time is no longer listed, so an owner that dies drops out by
itself, and one that stops cleanly removes its entry at once. Used by the instance registry
(`chaos.registry`) and by the health service's shared list of Envoys (`health.fleet_store`).

Two keys, hash-tagged into one slot: a sorted set `{<tag>}:alive` (id -> expiry, ms since the
epoch) and a hash `{<tag>}:<values>` (id -> value). Every error is Redis's (RedisError,
OSError) and passes through.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from llmproxy.common.redis import AnyRedis


def raise_if_cancelled() -> None:
    """Raise CancelledError if this task was cancelled and the cancellation got lost.

    redis-py can swallow a cancellation that lands inside a command; a loop that renews its
    entry calls this after each round, or the shutdown that cancels it would wait forever.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _text(raw: object) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


class HeartbeatEntries:
    """One set of expiring entries, under the hash tag `tag`; values names the hash's key."""

    def __init__(
        self,
        redis: AnyRedis,
        tag: str,
        values: str = "values",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._clock = clock
        self.alive_key = f"{{{tag}}}:alive"
        self.values_key = f"{{{tag}}}:{values}"

    async def put(self, entry: str, value: str, ttl_s: float) -> None:
        """Add or renew entry with value, listed for the next ttl_s."""
        expires = round((self._clock() + ttl_s) * 1000)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zadd(self.alive_key, {entry: expires})
            pipe.hset(self.values_key, entry, value)
            await pipe.execute()

    async def remove(self, entry: str) -> None:
        """Remove entry at once (its owner stops cleanly)."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zrem(self.alive_key, entry)
            pipe.hdel(self.values_key, entry)
            await pipe.execute()

    async def count(self) -> int:
        """How many entries are current (one call, nothing swept)."""
        now_ms = round(self._clock() * 1000)
        return int(await self._redis.zcount(self.alive_key, now_ms, "+inf"))

    async def live(self) -> dict[str, str]:
        """Each current entry's value, by id in order; expired entries are swept."""
        now_ms = round(self._clock() * 1000)
        ids = [_text(i) for i in await self._redis.zrangebyscore(self.alive_key, now_ms, "+inf")]
        stale = [
            _text(i) for i in await self._redis.zrangebyscore(self.alive_key, "-inf", now_ms - 1)
        ]
        if stale:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.zrem(self.alive_key, *stale)
                pipe.hdel(self.values_key, *stale)
                await pipe.execute()
        if not ids:
            return {}
        values = await self._redis.hmget(self.values_key, ids)
        found = sorted(zip(ids, values, strict=True))
        return {entry: _text(raw) for entry, raw in found if raw is not None}
