"""connect_redis against a real redis-server; a dead Redis raises instead of hanging."""

from __future__ import annotations

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from llmproxy.common.redis import connect_redis
from llmproxy.common.settings import RedisSettings
from tests.harness.ports import free_port


async def test_connects_to_a_real_redis(redis_process: str) -> None:
    client = connect_redis(RedisSettings(url=redis_process))
    try:
        assert await client.ping()
    finally:
        await client.aclose()


async def test_a_dead_redis_raises_after_the_bounded_retries() -> None:
    settings = RedisSettings(url=f"redis://127.0.0.1:{free_port()}/0", retries=2)
    client = connect_redis(settings)
    try:
        with pytest.raises(RedisConnectionError):
            await client.ping()
    finally:
        await client.aclose()
