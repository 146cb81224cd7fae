"""Redis behind Sentinel: the primary is killed, a replica is promoted, and clients follow."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
import redis.asyncio as aioredis
from envoy.service.auth.v3 import external_auth_pb2_grpc
from google.rpc import code_pb2
from redis.exceptions import RedisError

from llmproxy._gen.authz.v1 import authz_pb2, authz_pb2_grpc
from llmproxy.authz.server import serve as serve_authz
from llmproxy.common.errors import ConfigError
from llmproxy.common.net import free_port_block
from llmproxy.common.redis import connect_redis
from llmproxy.common.settings import RedisSettings
from llmproxy.config import DEFAULT_CONFIG, load_config
from llmproxy.devstack.stack import Stack
from tests.harness import logs
from tests.harness.configs import stack_config_data, write_config
from tests.harness.redis_sentinel import PRIMARY_NAME, SentinelRedis, sentinel_redis
from tests.harness.services import served
from tests.harness.waiting import eventually
from tests.unit.authz.test_requests import check_request

FAILOVER_DEADLINE_S = 30.0

# A known leak, marked here alone: some run of this module leaves redis-py connections of a
# closed loop behind (seen once in five full runs, when tests/conftest.py collects garbage after
# the module). Which client (the Sentinel's own, or one failed over mid-connect) is not yet
# found; the warning is ignored for this module only.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


async def replicated(topology: SentinelRedis) -> None:
    """Wait until the replica has every write the primary acknowledged so far."""
    primary = aioredis.Redis(port=topology.primary_port, socket_timeout=10)
    try:
        assert await primary.execute_command("WAIT", 1, 5000) == 1
    finally:
        await primary.aclose()


async def promoted(topology: SentinelRedis) -> bool:
    """Whether a sentinel names the former replica as the primary now."""
    port = int(topology.sentinels[0].name.removeprefix("sentinel-"))
    client = aioredis.Redis(port=port, socket_timeout=1)
    try:
        address = await client.sentinel_get_master_addr_by_name(PRIMARY_NAME)
    finally:
        await client.aclose()
    return bool(address) and int(address[1]) == topology.replica_port


async def test_the_authz_service_follows_a_failover(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    async with sentinel_redis(tmp_path, request) as topology:
        environ = {
            "LLMPROXY__REDIS__URL": topology.url,
            "LLMPROXY__SERVICES__AUTHZ__GRPC_PORT": "0",
        }
        config = load_config(DEFAULT_CONFIG, environ)
        async with served(serve_authz(config)) as service:
            admin = authz_pb2_grpc.AuthzServiceStub(service.channel)
            checks = external_auth_pb2_grpc.AuthorizationStub(service.channel)

            async def allowed(secret: str) -> bool:
                headers = {"authorization": f"Bearer {secret}"}
                body = b'{"model": "gpt-4o-mini", "messages": []}'
                reply = await checks.Check(check_request(headers, body), timeout=5)
                return bool(reply.status.code == code_pb2.OK)

            async def create_key() -> authz_pb2.CreateKeyResponse:
                request = authz_pb2.CreateKeyRequest(tenant="acme")
                reply: authz_pb2.CreateKeyResponse = await admin.CreateKey(request, timeout=5)
                return reply

            before = await create_key()
            assert await allowed(before.secret)
            await replicated(topology)
            # Checks of the known key every 50 ms through the whole failover.
            verdicts: list[bool | str] = []

            async def traffic() -> None:
                while True:
                    try:
                        verdicts.append(await allowed(before.secret))
                    except grpc.aio.AioRpcError as exc:
                        verdicts.append(exc.code().name)
                    await asyncio.sleep(0.05)  # the traffic's pace, not a wait for anything

            checking = asyncio.create_task(traffic())
            topology.primary.kill()
            # Admin writes fail until the sentinels promote the replica, then succeed there.
            after = await eventually(
                create_key,
                what="a key created after the failover",
                timeout_s=FAILOVER_DEADLINE_S,
                ignoring=(grpc.aio.AioRpcError,),
            )
            checking.cancel()
            await asyncio.gather(checking, return_exceptions=True)
            # The known key was authorized all along, from its last-known record meanwhile.
            assert len(verdicts) > 10
            assert set(verdicts) == {True}, verdicts
            assert await promoted(topology)
            # Both keys, the one from before the crash (replicated) and the new one, work: the
            # new one once authz's probe (every 0.5 s) has found Redis again, as until then
            # only last-known keys are authorized.
            assert await allowed(before.secret)
            await eventually(
                lambda: allowed(after.secret),
                what="the key created after the failover authorized",
                timeout_s=10,
                ignoring=(grpc.aio.AioRpcError,),
            )


async def test_a_client_writes_to_the_promoted_replica(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    async with sentinel_redis(tmp_path, request) as topology:
        client = connect_redis(RedisSettings(url=topology.url))
        try:
            await client.set("before", "1")
            await replicated(topology)
            topology.primary.kill()
            await eventually(
                lambda: client.set("after", "2"),
                what="a write after the failover",
                timeout_s=FAILOVER_DEADLINE_S,
                ignoring=(RedisError, OSError),
            )
            assert await client.get("before") == b"1"
            assert await promoted(topology)
        finally:
            await client.aclose()


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis+sentinel://127.0.0.1:26379", "the path must be /<primary name>"),
        ("redis+sentinel://127.0.0.1/mymaster", "is not host:port"),
        ("redis+sentinel://127.0.0.1:26379/mymaster/zero", "the path must be"),
    ],
)
def test_a_wrong_sentinel_url_is_a_config_error_naming_the_field(url: str, says: str) -> None:
    with pytest.raises(ConfigError, match="redis") as raised:
        load_config(DEFAULT_CONFIG, {"LLMPROXY__REDIS__URL": url})
    assert says in str(raised.value)


async def test_the_stack_starts_a_sentinel_topology_and_the_caches_own_redis(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    data = stack_config_data()
    # Three sentinels on free ports, the two data nodes on the two ports after the last one.
    last = free_port_block(5) + 2
    sentinels = ",".join(f"127.0.0.1:{port}" for port in (last - 2, last - 1, last))
    data["redis"]["url"] = f"redis+sentinel://{sentinels}/{PRIMARY_NAME}/0"
    path, config = write_config(tmp_path, data)
    stack = Stack(config, path, tmp_path / "run", {})
    try:
        await stack.start_redis(20)
        logs.watch(request.node, *stack.processes.values())
        assert sorted(stack.processes) == [
            "redis-cache",
            "redis-primary",
            "redis-replica",
            *(f"sentinel-{port}" for port in (last - 2, last - 1, last)),
        ]
        client = connect_redis(config.redis)
        try:
            await client.set("k", "v")
            assert await client.get("k") == b"v"
        finally:
            await client.aclose()
    finally:
        stack.stop()
