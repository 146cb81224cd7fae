"""redis.topology: inferred from the URL and the cluster flag when unset, checked when set."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis, RedisCluster

from llmproxy.common.errors import ConfigError
from llmproxy.common.redis import _SentinelPrimary, connect_redis, connect_subscriber
from llmproxy.common.settings import RedisSettings, RedisTopology
from llmproxy.config import DEFAULT_CONFIG, load_config

SENTINEL_URL = "redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/mymaster/0"


@pytest.mark.parametrize(
    ("fields", "topology"),
    [
        ({}, "single"),
        ({"url": "rediss://redis.example:6380/1"}, "single"),
        ({"url": SENTINEL_URL}, "sentinel"),
        ({"cluster": True}, "cluster"),
        ({"topology": "single"}, "single"),
        ({"topology": "sentinel", "url": SENTINEL_URL}, "sentinel"),
        ({"topology": "cluster", "cluster": True}, "cluster"),
        # The named setting alone is enough for a Cluster.
        ({"topology": "cluster"}, "cluster"),
    ],
)
def test_the_topology_is_named_or_inferred(fields: dict[str, object], topology: str) -> None:
    settings = RedisSettings.model_validate(fields)
    assert settings.resolved_topology == topology
    assert settings.topology == fields.get("topology")


@pytest.mark.parametrize(
    ("environ", "says"),
    [
        (
            {"TOPOLOGY": "sentinel"},
            "redis.topology: sentinel needs a redis+sentinel://host:port,host:port/<primary "
            "name>[/db] url naming the sentinels, but redis.url is a redis:// URL",
        ),
        (
            {"TOPOLOGY": "sentinel", "URL": "rediss://redis.example:6380/0"},
            "redis.url is a rediss:// URL; change redis.url",
        ),
        ({"TOPOLOGY": "single", "URL": SENTINEL_URL}, "set topology: sentinel"),
        ({"TOPOLOGY": "cluster", "URL": SENTINEL_URL}, "cluster contradicts redis.url"),
        ({"TOPOLOGY": "single", "CLUSTER": "true"}, "single contradicts redis.cluster: true"),
        ({"TOPOLOGY": "cluster", "CLUSTER": "false"}, "cluster contradicts redis.cluster: false"),
    ],
)
def test_a_topology_that_disagrees_is_a_config_error_naming_it(
    environ: dict[str, str], says: str
) -> None:
    env = {f"LLMPROXY__REDIS__{name}": value for name, value in environ.items()}
    with pytest.raises(ConfigError) as raised:
        load_config(DEFAULT_CONFIG, env)
    message = str(raised.value)
    assert "  redis.topology: " in message, message
    assert says in message


def test_an_unknown_topology_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"redis\.topology: Input should be 'single'"):
        load_config(DEFAULT_CONFIG, {"LLMPROXY__REDIS__TOPOLOGY": "replicated"})


@pytest.mark.parametrize(
    ("fields", "client"),
    [
        ({}, Redis),
        ({"topology": "cluster"}, RedisCluster),
        ({"cluster": True}, RedisCluster),
        ({"url": SENTINEL_URL}, _SentinelPrimary),
        ({"url": SENTINEL_URL, "topology": "sentinel"}, _SentinelPrimary),
    ],
)
async def test_each_topology_gets_its_client(fields: dict[str, object], client: type) -> None:
    # No connection is made until the first command: no Redis is needed here.
    redis = connect_redis(RedisSettings.model_validate(fields))
    try:
        assert type(redis) is client
    finally:
        await redis.aclose()


async def test_a_subscriber_follows_the_sentinels_primary() -> None:
    subscriber = connect_subscriber(RedisSettings(url=SENTINEL_URL, topology="sentinel"))
    try:
        assert type(subscriber) is _SentinelPrimary
    finally:
        await subscriber.aclose()


@pytest.mark.parametrize(
    ("fields", "url", "topology"),
    [
        ({"url": SENTINEL_URL, "topology": "sentinel"}, "redis://127.0.0.1:6390/0", "single"),
        ({"topology": "cluster"}, "redis://127.0.0.1:6390/0", "cluster"),
        ({"cluster": True}, "redis://127.0.0.1:6390/0", "cluster"),
        ({}, SENTINEL_URL, "sentinel"),
        ({}, "redis://127.0.0.1:6390/0", "single"),
    ],
)
def test_the_caches_own_redis_takes_its_topology_from_its_url(
    fields: dict[str, object], url: str, topology: RedisTopology
) -> None:
    cache = RedisSettings.model_validate(fields).with_url(url)
    assert cache.url == url
    assert cache.resolved_topology == topology
