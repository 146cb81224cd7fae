"""The one way services connect to Redis: bounded timeouts and retries, standalone or cluster."""

from __future__ import annotations

from typing import TypeAlias

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import EqualJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from llmproxy.common.settings import RedisSettings

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


def connect_redis(settings: RedisSettings) -> AnyRedis:
    """A client for settings.url; no connection is made until the first command."""
    timeout = settings.socket_timeout_s
    if settings.cluster:
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
