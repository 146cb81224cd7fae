"""The harness's Redis backends: a local redis-server process, or a testcontainers container."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
import redis.asyncio as aioredis


async def test_process_backend_is_a_real_redis(redis_client: aioredis.Redis) -> None:
    await redis_client.set("llmproxy:probe", "1", px=60_000)
    assert await redis_client.get("llmproxy:probe") == b"1"
    info = await redis_client.info("server")
    assert str(info["redis_version"]).startswith("7.")
    assert 0 < await redis_client.pttl("llmproxy:probe") <= 60_000


async def test_redis_client_fixture_starts_each_test_flushed(
    redis_client: aioredis.Redis,
) -> None:
    assert await redis_client.dbsize() == 0


@pytest.fixture
def redis_container(docker_engine: None) -> Iterator[str]:
    from testcontainers.redis import RedisContainer  # noqa: PLC0415 - needs Docker only here

    with RedisContainer("redis:7-alpine") as container:
        host = container.get_container_host_ip()
        yield f"redis://{host}:{container.get_exposed_port(6379)}/0"


@pytest.mark.docker
def test_container_backend_is_a_real_redis(redis_container: str) -> None:
    client = redis.Redis.from_url(redis_container)
    try:
        assert client.ping()
    finally:
        client.close()
