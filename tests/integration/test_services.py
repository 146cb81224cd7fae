"""Each service as a real gRPC server on a free port: health, reflection, control API."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
import pytest
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from llmproxy._gen.authz.v1 import authz_pb2, authz_pb2_grpc
from llmproxy._gen.fault.v1 import fault_pb2, fault_pb2_grpc
from llmproxy._gen.health.v1 import health_pb2 as provider_health_pb2
from llmproxy._gen.health.v1 import health_pb2_grpc as provider_health_pb2_grpc
from llmproxy._gen.ratelimit.v1 import ratelimit_pb2, ratelimit_pb2_grpc
from llmproxy._gen.router.v1 import router_pb2, router_pb2_grpc
from llmproxy.authz import server as authz_server
from llmproxy.common.contract import component_health_name
from llmproxy.common.server import RunningServer
from llmproxy.config import DEFAULT_CONFIG, StackConfig, load_config
from llmproxy.fault import server as fault_server
from llmproxy.health import server as health_server
from llmproxy.ratelimit import server as ratelimit_server
from llmproxy.router import server as router_server
from tests.harness.ports import free_port
from tests.harness.redis_server import own_redis
from tests.harness.services import admin_channel, served
from tests.harness.waiting import eventually

Serve = Callable[[StackConfig], Awaitable[RunningServer]]
SERVERS: dict[str, tuple[Serve, tuple[str, ...]]] = {
    "router": (router_server.serve, router_server.SERVICE_NAMES),
    "ratelimit": (ratelimit_server.serve, ratelimit_server.SERVICE_NAMES),
    "authz": (authz_server.serve, authz_server.SERVICE_NAMES),
    "health": (health_server.serve, health_server.SERVICE_NAMES),
    "fault": (fault_server.serve, fault_server.SERVICE_NAMES),
}


def config_on_port_zero() -> StackConfig:
    environ = {f"LLMPROXY__SERVICES__{name.upper()}__GRPC_PORT": "0" for name in SERVERS}
    # Services that use Redis must not reach a real one on the default port: none listens here.
    environ["LLMPROXY__REDIS__URL"] = f"redis://127.0.0.1:{free_port()}/0"
    return load_config(DEFAULT_CONFIG, environ=environ)


@pytest.fixture(params=list(SERVERS))
async def running(request: pytest.FixtureRequest) -> AsyncIterator[tuple[str, RunningServer]]:
    serve, _ = SERVERS[request.param]
    async with served(serve(config_on_port_zero())) as service:
        yield request.param, service.running


async def test_every_service_reports_serving(running: tuple[str, RunningServer]) -> None:
    name, server = running
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ["", *SERVERS[name][1]]:
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, service
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_reflection_lists_every_service(running: tuple[str, RunningServer]) -> None:
    name, server = running
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        async for reply in replies:
            listed = {s.name for s in reply.list_services_response.service}
            break
    assert set(SERVERS[name][1]) <= listed
    assert "grpc.health.v1.Health" in listed


async def test_graceful_shutdown_reports_not_serving(
    running: tuple[str, RunningServer],
) -> None:
    _, server = running
    await server.health.enter_graceful_shutdown()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING


CONTROL_CALLS: dict[str, tuple[Callable[[grpc.aio.Channel], object], str, Message]] = {
    "router": (router_pb2_grpc.RouterServiceStub, "ListModels", router_pb2.ListModelsRequest()),
    "ratelimit": (
        ratelimit_pb2_grpc.RateLimitControlServiceStub,
        "GetLimits",
        ratelimit_pb2.GetLimitsRequest(),
    ),
    "authz": (authz_pb2_grpc.AuthzServiceStub, "GetPolicy", authz_pb2.GetPolicyRequest()),
    "health": (
        provider_health_pb2_grpc.ProviderHealthServiceStub,
        "ListProviders",
        provider_health_pb2.ListProvidersRequest(),
    ),
    # Without Redis the experiments API is UNAVAILABLE (see tests/integration/fault); the
    # emergency stop answers from memory.
    "fault": (
        fault_pb2_grpc.FaultServiceStub,
        "EmergencyStop",
        fault_pb2.EmergencyStopRequest(reason="test"),
    ),
}


async def test_control_api_answers(running: tuple[str, RunningServer]) -> None:
    name, server = running
    stub_class, method, request = CONTROL_CALLS[name]
    async with admin_channel(f"127.0.0.1:{server.port}") as channel:
        reply = await getattr(stub_class(channel), method)(request)
    config = config_on_port_zero()
    if name == "router":
        assert [m.name for m in reply.models] == [m.name for m in config.models]
    elif name == "ratelimit":
        assert reply.domain == config.services.ratelimit.domain
    elif name == "authz":
        assert reply.mode == authz_pb2.POLICY_MODE_API_KEYS
        assert "x-llmproxy-tenant" in reply.identity_headers
    elif name == "health":
        assert [p.name for p in reply.providers] == ["demo"]
    else:
        assert list(reply.stopped) == []


def health_check(server: RunningServer, service: str) -> Callable[[], Awaitable[str]]:
    """A probe of one gRPC health service name's status, by name."""

    async def probe() -> str:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

    return probe


@pytest.mark.parametrize("name", ["router", "authz", "fault"])
async def test_a_service_reports_its_redis_dying_and_coming_back(
    name: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    environ = {f"LLMPROXY__SERVICES__{n.upper()}__GRPC_PORT": "0" for n in SERVERS}
    async with own_redis(tmp_path, request) as (url, redis):
        config = load_config(DEFAULT_CONFIG, environ={**environ, "LLMPROXY__REDIS__URL": url})
        async with served(SERVERS[name][0](config)) as service:
            component = health_check(service.running, component_health_name(name, "redis"))
            await eventually(component, lambda s: s == "SERVING", what="redis up", timeout_s=10)
            redis.kill()
            await eventually(
                component, lambda s: s == "NOT_SERVING", what="redis down", timeout_s=15
            )
            # Reported, not decisive: the service still answers what it can without Redis.
            assert await health_check(service.running, "")() == "SERVING"
            redis.start()  # the same port, as a supervisor restarts it
            await redis.wait_ready(15)
            await eventually(component, lambda s: s == "SERVING", what="redis back", timeout_s=15)
