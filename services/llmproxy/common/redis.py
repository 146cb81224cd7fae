"""The one way services connect to Redis: bounded timeouts and retries, for a standalone Redis,
a Redis Cluster, or a primary watched by Redis Sentinel.

A Sentinel URL names the sentinels and the primary's name, as redis-py's Sentinel client takes
them: `redis+sentinel://host:26379,host:26380/mymaster/0`. The client asks a sentinel where the
primary is, and asks again whenever a connection to it fails, so a failover is followed without
a restart.
"""

from __future__ import annotations

from typing import TypeAlias

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import EqualJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from llmproxy.common.settings import RedisSettings, parse_sentinel_url

AnyRedis: TypeAlias = "Redis | RedisCluster"
# How often a service PINGs its Redis to report the `redis` component of its gRPC health.
REDIS_CHECK_INTERVAL_S = 2.0


def _retry(settings: RedisSettings) -> Retry:
    # Jittered, capped backoff: a Redis blip costs at most a few tens of milliseconds per call.
    return Retry(
        EqualJitterBackoff(cap=0.05, base=0.005),
        settings.retries,
        supported_errors=(RedisConnectionError, RedisTimeoutError),
    )


class _SentinelPrimary(Redis):
    """The primary's client, which also closes the connections it made to the sentinels."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        manager = getattr(self.connection_pool, "sentinel_manager", None)
        for sentinel in getattr(manager, "sentinels", ()):
            await sentinel.aclose()


def _sentinel_primary(settings: RedisSettings, health_check_interval: int) -> Redis:
    url = parse_sentinel_url(settings.url)
    timeout = settings.socket_timeout_s
    sentinel = Sentinel(  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
        list(url.sentinels),
        sentinel_kwargs={"socket_timeout": timeout, "socket_connect_timeout": timeout},
    )
    primary: Redis = sentinel.master_for(
        url.primary,
        redis_class=_SentinelPrimary,
        db=url.db,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=_retry(settings),
        health_check_interval=health_check_interval,
    )
    return primary


def connect_redis(settings: RedisSettings) -> AnyRedis:
    """A client for settings.url; no connection is made until the first command."""
    timeout = settings.socket_timeout_s
    topology = settings.resolved_topology
    if topology == "sentinel":
        return _sentinel_primary(settings, health_check_interval=10)
    if topology == "cluster":
        return RedisCluster.from_url(
            settings.url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=_retry(settings),
        )
    return Redis.from_url(
        settings.url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=_retry(settings),
        health_check_interval=10,
    )


def connect_subscriber(settings: RedisSettings) -> Redis:
    """A plain client for pub/sub subscriptions, whose idle connection is PINGed every second.

    A non-cluster connection to the configured node is enough even for a cluster: classic
    pub/sub messages are broadcast to every node. Behind Sentinel it follows the primary.
    """
    if settings.resolved_topology == "sentinel":
        return _sentinel_primary(settings, health_check_interval=1)
    return Redis.from_url(
        settings.url, socket_connect_timeout=settings.socket_timeout_s, health_check_interval=1
    )
