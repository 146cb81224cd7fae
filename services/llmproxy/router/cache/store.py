"""The response cache in Redis: entries, invalidation indexes, shared statistics.

Layout (every key hash-tagged, so each command touches one Cluster slot):
  llmproxy:cache:{<sha256>}           hash: meta (JSON), body (bytes); TTL per entry
  llmproxy:cache:idx:{model:<name>}   set of entry keys of a model, for invalidation
  llmproxy:cache:idx:{tag:<tag>}      set of entry keys carrying a tag
  llmproxy:cache:idx:{tenant:<name>}  set of entry keys of a tenant (cache.scope tenant)
  llmproxy:cache:stats:{<model>}      hash of counters shared by every router instance

Redis trouble never reaches the client: an error makes the cache skip Redis for a short backoff
and report a miss, and caching resumes by itself once Redis answers again.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Protocol

from redis.exceptions import RedisError

from llmproxy.common.redis import AnyRedis
from llmproxy.router.cache.metrics import CACHE_ERRORS

log = logging.getLogger(__name__)

PREFIX = "llmproxy:cache:"
STAT_FIELDS = ("hits", "misses", "bypasses", "bytes_served", "saved_tokens", "saved_usd")


def entry_key(digest: str) -> str:
    """The Redis key of the entry for a request digest."""
    return f"{PREFIX}{{{digest}}}"


def index_key(kind: str, name: str) -> str:
    """The set listing the entries of a model ("model") or tag ("tag")."""
    return f"{PREFIX}idx:{{{kind}:{name}}}"


def stats_key(model: str) -> str:
    """The hash of shared counters of a model."""
    return f"{PREFIX}stats:{{{model}}}"


@dataclass(frozen=True)
class CachedAnswer:
    """A stored answer: its bytes (SSE events for streams) and what it would have cost."""

    content_type: str
    body: bytes
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    tenant: str = ""  # whose entry it is; empty when every tenant shares it (scope global)

    @property
    def saved_tokens(self) -> int:
        """Tokens a hit on this entry saves."""
        return self.prompt_tokens + self.completion_tokens


class ResponseCache(Protocol):
    """Where answers are kept; every method absorbs storage errors."""

    async def get(self, digest: str) -> CachedAnswer | None:
        """The answer stored for digest, or None (also when storage fails)."""

    async def put(self, digest: str, answer: CachedAnswer, ttl_s: int, tags: Iterable[str]) -> bool:
        """Store answer for ttl_s; False when it could not be stored."""

    async def invalidate(
        self,
        digests: Iterable[str] = (),
        models: Iterable[str] = (),
        tags: Iterable[str] = (),
        everything: bool = False,
        tenants: Iterable[str] = (),
    ) -> int:
        """Remove entries by digest, model, tag, tenant or all; returns how many were removed."""

    async def add_stats(self, model: str, counters: dict[str, float]) -> None:
        """Add to the shared counters of model."""

    async def read_stats(self) -> dict[str, dict[str, float]]:
        """The shared counters of every model."""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisResponseCache:
    """ResponseCache on Redis, standalone or Cluster."""

    def __init__(self, redis: AnyRedis, backoff_s: float) -> None:
        self._redis = redis
        self._backoff_s = backoff_s
        self._skip_until = 0.0

    def _available(self) -> bool:
        return time.monotonic() >= self._skip_until

    def _failed(self, operation: str, exc: Exception) -> None:
        CACHE_ERRORS.labels(operation).inc()
        if self._available():
            log.warning(
                "cache unavailable, serving uncached",
                extra={
                    "operation": operation,
                    "error": type(exc).__name__,
                    "retry_in_s": self._backoff_s,
                },
            )
        self._skip_until = time.monotonic() + self._backoff_s

    async def get(self, digest: str) -> CachedAnswer | None:
        """The stored answer, or None on a miss or any Redis error."""
        if not self._available():
            return None
        try:
            fields = await self._redis.hgetall(entry_key(digest))
        except (RedisError, OSError) as exc:
            self._failed("get", exc)
            return None
        if not fields:
            return None
        meta = json.loads(fields[b"meta"])
        body = fields[b"body"]
        return CachedAnswer(body=body if isinstance(body, bytes) else body.encode(), **meta)

    async def put(self, digest: str, answer: CachedAnswer, ttl_s: int, tags: Iterable[str]) -> bool:
        """Store the entry, then index it by model and tags for invalidation."""
        if not self._available():
            return False
        key = entry_key(digest)
        meta = {k: v for k, v in asdict(answer).items() if k != "body"}
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hset(key, mapping={"meta": json.dumps(meta), "body": answer.body})
                pipe.expire(key, ttl_s)
                await pipe.execute()
            indexes = [index_key("model", answer.model), *(index_key("tag", t) for t in tags)]
            if answer.tenant:
                indexes.append(index_key("tenant", answer.tenant))
            for index in indexes:
                async with self._redis.pipeline(transaction=False) as pipe:
                    pipe.sadd(index, key)
                    # An index outlives its entries a little; stale members are harmless.
                    pipe.expire(index, ttl_s + 60, gt=True)
                    pipe.expire(index, ttl_s + 60, nx=True)
                    await pipe.execute()
        except (RedisError, OSError) as exc:
            self._failed("put", exc)
            return False
        return True

    async def _members(self, index: str) -> list[str]:
        members = await self._redis.smembers(index)
        return [_text(m) for m in members]

    async def _scan_all(self) -> list[str]:
        found = []
        for pattern in (f"{PREFIX}{{*", f"{PREFIX}idx:*"):
            async for key in self._redis.scan_iter(match=pattern, count=500):
                found.append(_text(key))
        return found

    async def invalidate(
        self,
        digests: Iterable[str] = (),
        models: Iterable[str] = (),
        tags: Iterable[str] = (),
        everything: bool = False,
        tenants: Iterable[str] = (),
    ) -> int:
        """Remove entries; Redis errors propagate so the operator sees them."""
        keys = {entry_key(d) for d in digests}
        indexes = [
            *(index_key("model", m) for m in models),
            *(index_key("tag", t) for t in tags),
            *(index_key("tenant", t) for t in tenants),
        ]
        for index in indexes:
            keys.update(await self._members(index))
        if everything:
            keys.update(await self._scan_all())
        removed = 0
        for key in sorted(keys | set(indexes)):
            # One key a command: entries and indexes live in different Cluster slots.
            deleted = await self._redis.unlink(key)
            removed += int(deleted) if not key.startswith(f"{PREFIX}idx:") else 0
        return removed

    async def add_stats(self, model: str, counters: dict[str, float]) -> None:
        """Add counters to the model's shared hash (errors only counted: stats may lag)."""
        if not counters or not self._available():
            return
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for name, value in counters.items():
                    if isinstance(value, float) and not value.is_integer():
                        pipe.hincrbyfloat(stats_key(model), name, value)
                    else:
                        pipe.hincrby(stats_key(model), name, int(value))
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self._failed("stats", exc)

    async def read_stats(self) -> dict[str, dict[str, float]]:
        """Every model's shared counters; Redis errors propagate to the operator."""
        result: dict[str, dict[str, float]] = {}
        async for raw in self._redis.scan_iter(match=f"{PREFIX}stats:*", count=500):
            key = _text(raw)
            model = key[len(f"{PREFIX}stats:{{") : -1]
            values = await self._redis.hgetall(key)
            result[model] = {_text(k): float(v) for k, v in values.items()}
        return result

    async def configure_eviction(self, policy: str | None, maxmemory: str | None) -> None:
        """Set Redis's eviction policy and memory cap; a refusal is logged, not fatal."""
        try:
            if policy:
                await self._redis.config_set("maxmemory-policy", policy)
            if maxmemory:
                await self._redis.config_set("maxmemory", maxmemory)
        except (RedisError, OSError) as exc:
            log.warning("could not configure Redis eviction", extra={"error": str(exc)})
