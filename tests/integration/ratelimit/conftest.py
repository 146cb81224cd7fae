"""Rate limit servers on real Redis (standalone and a 3-master cluster), in this process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import redis.asyncio as aioredis
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2 as common_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from google.protobuf.wrappers_pb2 import UInt64Value

from llmproxy._gen.ratelimit.v1 import ratelimit_pb2_grpc
from llmproxy.common.server import RunningServer
from llmproxy.config import DEFAULT_CONFIG, load_config
from llmproxy.ratelimit.redis_store import RedisLimitStore
from llmproxy.ratelimit.server import serve
from tests.harness.redis_cluster import RedisClusterNodes, redis_cluster
from tests.harness.services import served
from tests.harness.waiting import eventually


@dataclass
class Instance:
    """One running rate limit server and stubs to call it."""

    running: RunningServer
    rls: rls_pb2_grpc.RateLimitServiceStub
    control: ratelimit_pb2_grpc.RateLimitControlServiceAsyncStub
    channel: grpc.aio.Channel
    # The same API as the router calls it, with the service token (ReconcileTokens*).
    internal: ratelimit_pb2_grpc.RateLimitControlServiceAsyncStub


StartRatelimit = Callable[..., Awaitable[Instance]]


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterNodes]:
    """A real 3-master Redis Cluster for the whole session."""
    with redis_cluster(tmp_path_factory.mktemp("redis-cluster")) as nodes:
        yield nodes


@pytest.fixture
async def cluster_client(cluster: RedisClusterNodes) -> AsyncIterator[aioredis.RedisCluster]:
    """A client of the session's cluster, flushed before each test."""
    client = aioredis.RedisCluster.from_url(cluster.url)
    await client.flushall()
    yield client
    await client.aclose()


@pytest.fixture
async def store(redis_process: str, redis_client: aioredis.Redis) -> AsyncIterator[RedisLimitStore]:
    """take.lua and adjust.lua on the session's Redis (flushed first), without a server."""
    limiter = RedisLimitStore(aioredis.Redis.from_url(redis_process))
    yield limiter
    await limiter.aclose()


@pytest.fixture
def limits_file(tmp_path: Path) -> Callable[[str], Path]:
    """Writes a limits document to the test's folder; returns its path."""

    def write(text: str) -> Path:
        path = tmp_path / "ratelimit.yaml"
        path.write_text(text)
        return path

    return write


@pytest.fixture
async def start_ratelimit(
    redis_client: aioredis.Redis, redis_process: str
) -> AsyncIterator[StartRatelimit]:
    """Starts rate limit servers on port 0 against the session's Redis (or a given URL)."""
    async with AsyncExitStack() as stack:

        async def start(
            limits: Path, redis_url: str | None = None, *, cluster: bool = False, **settings: str
        ) -> Instance:
            environ = {
                "LLMPROXY__SERVICES__RATELIMIT__GRPC_PORT": "0",
                "LLMPROXY__SERVICES__RATELIMIT__LIMITS_FILE": str(limits),
                "LLMPROXY__REDIS__URL": redis_url or redis_process,
                "LLMPROXY__REDIS__CLUSTER": "true" if cluster else "false",
                # Bursts of hundreds of calls on a shared 2-core machine: not an outage.
                "LLMPROXY__SERVICES__RATELIMIT__REDIS_TIMEOUT_S": "2",
                **{f"LLMPROXY__SERVICES__RATELIMIT__{k.upper()}": v for k, v in settings.items()},
            }
            config = load_config(DEFAULT_CONFIG, environ=environ)
            service = await stack.enter_async_context(served(serve(config)))
            return Instance(
                service.running,
                rls_pb2_grpc.RateLimitServiceStub(service.channel),
                ratelimit_pb2_grpc.RateLimitControlServiceStub(service.channel),
                service.channel,
                ratelimit_pb2_grpc.RateLimitControlServiceStub(service.internal),
            )

        yield start


async def redis_now_ms(client: aioredis.Redis) -> int:
    """Redis's clock (TIME), which take.lua's windows follow, in milliseconds."""
    seconds, micros = await client.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def until_redis_time(client: aioredis.Redis, accept: Callable[[int], bool], what: str) -> int:
    """Poll Redis's clock until accept(now_ms): a window the test needs to pass has passed."""
    return await eventually(lambda: redis_now_ms(client), accept, what=what, timeout_s=30)


def descriptor(
    *entries: tuple[str, str], hits: int | None = None
) -> common_pb2.RateLimitDescriptor:
    """An Envoy descriptor of entries, with its own hits_addend if given."""
    found = common_pb2.RateLimitDescriptor(
        entries=[common_pb2.RateLimitDescriptor.Entry(key=k, value=v) for k, v in entries]
    )
    if hits is not None:
        found.hits_addend.CopyFrom(UInt64Value(value=hits))
    return found


def request(*descriptors: common_pb2.RateLimitDescriptor) -> rls_pb2.RateLimitRequest:
    """A RateLimitRequest of the llmproxy domain."""
    return rls_pb2.RateLimitRequest(domain="llmproxy", descriptors=list(descriptors))


OK = rls_pb2.RateLimitResponse.OK
OVER_LIMIT = rls_pb2.RateLimitResponse.OVER_LIMIT
# 10,000 tokens a minute per tenant; ALGORITHM is replaced with sliding_log or sliding_counter.
TPM_LIMITS = """
domain: llmproxy
descriptors:
  - key: tokens
    descriptors:
      - key: tenant
        rate_limit: {unit: minute, requests_per_unit: 10000, algorithm: ALGORITHM}
"""
