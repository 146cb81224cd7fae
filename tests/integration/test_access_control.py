"""Every service's access interceptor, on real in-process servers and the session's Redis.

Person tokens other than the bootstrap admin need authz (tests/e2e/test_control_access.py
covers every role through Envoy); here authz is absent on purpose, which also shows that an
unknown token is refused with UNAVAILABLE, never let in, while authz cannot be asked.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import grpc
import pytest
import redis.asyncio as aioredis
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import MethodDescriptor
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from llmproxy._gen.health.v1 import health_pb2, health_pb2_grpc
from llmproxy._gen.ratelimit.v1 import ratelimit_pb2
from llmproxy.common.access import path_of, rule_for
from llmproxy.common.access_control import access_control
from llmproxy.common.audit import AUDIT_STREAM
from llmproxy.common.contract import SERVICES
from llmproxy.common.credentials import bearer_metadata
from llmproxy.common.errors import ConfigError
from llmproxy.common.server import RunningServer
from llmproxy.common.settings import ControlSettings
from llmproxy.config import StackConfig
from tests.harness import control
from tests.harness.configs import stack_config_data, write_config
from tests.harness.services import Served, served, service_channel

CONTROL = ControlSettings()
Start = Callable[[str], Awaitable[Served]]


@pytest.fixture
async def start_service(
    tmp_path: Path, redis_process: str, redis_client: aioredis.Redis
) -> AsyncIterator[Start]:
    """Starts one service in process with the shipped configuration, free ports, no authz."""
    async with AsyncExitStack() as stack:

        async def start(name: str) -> Served:
            data = stack_config_data(redis={"url": redis_process})
            data["services"][name]["grpc_port"] = 0
            _, config = write_config(tmp_path, data)
            serve: Callable[[StackConfig], Awaitable[RunningServer]] = importlib.import_module(
                f"llmproxy.{name}.server"
            ).serve
            return await stack.enter_async_context(served(serve(config)))

        yield start


async def served_methods(channel: grpc.aio.Channel) -> list[MethodDescriptor]:
    """Every method of every service the server lists through reflection."""
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    methods = []
    async for reply in stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    ):
        for service in reply.list_services_response.service:
            try:
                found = descriptor_pool.Default().FindServiceByName(service.name)
            except KeyError:
                continue  # reflection's own v1 twin, which our pool does not hold
            methods.extend(found.methods)
    return methods


async def call(port: int, method: MethodDescriptor, token: str | None = None) -> grpc.StatusCode:
    """Call method with an empty request; the status it ends with."""
    # A channel without the harness's admin token: this test decides what each call presents.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as bare:
        answer = await control.call(bare, method, token, timeout_s=5)
    return answer.code


@pytest.mark.parametrize("name", SERVICES)
async def test_every_served_rpc_has_a_rule_and_no_control_rpc_is_open(
    start_service: Start, name: str
) -> None:
    service = await start_service(name)
    methods = await served_methods(service.channel)
    assert len(methods) > 5
    for method in methods:
        path = path_of(method)
        rule = rule_for(path)
        assert rule is not None, f"{path} is served with no access rule"
        if rule.open:
            continue
        assert await call(service.port, method) == grpc.StatusCode.UNAUTHENTICATED, path


def ratelimit_method(name: str) -> MethodDescriptor:
    return ratelimit_pb2.DESCRIPTOR.services_by_name["RateLimitControlService"].methods_by_name[
        name
    ]


async def test_each_credential_gets_what_its_rule_allows(start_service: Start) -> None:
    service = await start_service("ratelimit")
    admin = os.environ[CONTROL.admin_token_env]
    internal = os.environ[CONTROL.service_token_env]
    get_limits, reconcile = ratelimit_method("GetLimits"), ratelimit_method("ReconcileTokensBatch")
    assert await call(service.port, get_limits, admin) == grpc.StatusCode.OK
    assert await call(service.port, get_limits, internal) == grpc.StatusCode.PERMISSION_DENIED
    assert await call(service.port, reconcile, internal) == grpc.StatusCode.OK
    assert await call(service.port, reconcile, admin) == grpc.StatusCode.PERMISSION_DENIED
    # Not the admin or service token, and authz (which would know it) is not running.
    unknown = "ct-llmp-0123456789abcdef-" + "x" * 43
    assert await call(service.port, get_limits, unknown) == grpc.StatusCode.UNAVAILABLE


async def test_refusals_say_who_may_call(start_service: Start) -> None:
    service = await start_service("ratelimit")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.port}") as bare:
        stub = bare.unary_unary(
            "/llmproxy.ratelimit.v1.RateLimitControlService/ResetUsage",
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=ratelimit_pb2.ResetUsageResponse.FromString,
        )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub(
                ratelimit_pb2.ResetUsageRequest(),
                metadata=bearer_metadata(os.environ[CONTROL.service_token_env]),
            )
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert refused.value.details() == (
            "ResetUsage needs a control token of role operator or above; the caller's role is "
            "service"
        )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub(ratelimit_pb2.ResetUsageRequest(), metadata=(("authorization", "Basic x"),))
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "must read 'Bearer <control token>'" in (refused.value.details() or "")


async def test_mutating_calls_and_refusals_are_audited_without_secrets(
    start_service: Start, redis_client: aioredis.Redis
) -> None:
    service = await start_service("ratelimit")
    admin = os.environ[CONTROL.admin_token_env]
    reset = ratelimit_method("ResetUsage")
    await call(service.port, reset, admin)  # no descriptors: INVALID_ARGUMENT, audited
    await call(service.port, reset, "wrong-" + "x" * 40)  # refused: audited too
    await call(service.port, ratelimit_method("GetLimits"), admin)  # a read: not audited
    rows = await redis_client.xrange(AUDIT_STREAM)
    entries = [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in rows]
    assert [(e["method"], e["outcome"], e["actor"]) for e in entries] == [
        ("ResetUsage", "INVALID_ARGUMENT", "bootstrap-admin"),
        ("ResetUsage", "UNAVAILABLE", "anonymous"),
    ]
    first = entries[0]
    assert first["service"] == "ratelimit"
    assert first["role"] == "admin"
    assert json.loads(first["arguments"]) == {}
    assert first["peer"].startswith("ipv4:127.0.0.1:")
    assert all(admin not in value for e in entries for value in e.values())


async def test_streams_carry_the_channels_token_too(start_service: Start) -> None:
    service = await start_service("health")
    async with service_channel(f"127.0.0.1:{service.port}") as channel:
        watch = health_pb2_grpc.ProviderHealthServiceStub(channel).WatchProviders(
            health_pb2.WatchProvidersRequest(), timeout=5
        )
        async for reply in watch:
            assert reply.provider.name
            break


def test_a_service_without_the_service_token_does_not_start(tmp_path: Path) -> None:
    _, config = write_config(tmp_path, stack_config_data())
    with pytest.raises(ConfigError, match=r"\$LLMPROXY_SERVICE_TOKEN is not set"):
        access_control(config, aioredis.Redis(), service="router", environ={})
    with pytest.raises(ConfigError, match="32 to 512 characters"):
        access_control(
            config, aioredis.Redis(), service="router", environ={CONTROL.service_token_env: "short"}
        )
