"""The fault service in process on a free port over a real Redis: its API and its RTDS stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from typing import Any

import grpc
import pytest
import redis.asyncio as aioredis
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.runtime.v3 import rtds_pb2, rtds_pb2_grpc
from google.protobuf import duration_pb2
from google.rpc import status_pb2
from prometheus_client import REGISTRY

from llmproxy._gen.fault.v1 import agent_pb2, agent_pb2_grpc, fault_pb2, fault_pb2_grpc
from llmproxy.common.access_control import access_control
from llmproxy.common.chaos.registry import InstanceRegistry
from llmproxy.common.contract import RTDS_RESOURCE
from llmproxy.common.server import start_server
from llmproxy.common.settings import ServiceSettings
from llmproxy.fault.runtime import TYPE_URL
from llmproxy.fault.server import serve
from tests.harness.ports import free_port
from tests.harness.services import Served, served
from tests.harness.waiting import eventually
from tests.integration.fault.conftest import StartFault, fault_config


def create(name: str, route: str = "chat", percent: int = 50) -> fault_pb2.CreateExperimentRequest:
    return fault_pb2.CreateExperimentRequest(
        name=name,
        target=fault_pb2.Target(route=route),
        faults=[fault_pb2.Fault(abort=fault_pb2.AbortFault(percent=percent, http_status=503))],
        severity=fault_pb2.SEVERITY_HIGH,
        duration=duration_pb2.Duration(seconds=60),
    )


async def expect_error(call: Any, code: grpc.StatusCode, text: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code, caught.value.details()
    assert text in (caught.value.details() or "")


async def test_api_answers_each_error_with_its_status(
    start_fault: StartFault, redis_client: aioredis.Redis, redis_process: str
) -> None:
    channel = (await start_fault(fault_config(redis_process))).channel
    api = fault_pb2_grpc.FaultServiceStub(channel)
    created = await api.CreateExperiment(create("e1"))
    assert created.experiment.state == fault_pb2.EXPERIMENT_STATE_PENDING
    await expect_error(
        api.CreateExperiment(create("e1")), grpc.StatusCode.ALREADY_EXISTS, "already exists"
    )
    await expect_error(
        api.CreateExperiment(create("e2", percent=60)),
        grpc.StatusCode.INVALID_ARGUMENT,
        "faults[0].abort.percent: 60% is over the HIGH severity cap of 50%",
    )
    await expect_error(
        api.CreateExperiment(create("e3", route="nope")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "target.route: unknown route 'nope'",
    )
    await expect_error(
        api.GetExperiment(fault_pb2.GetExperimentRequest(name="ghost")),
        grpc.StatusCode.NOT_FOUND,
        "no experiment named 'ghost'",
    )
    await expect_error(
        api.StartExperiment(fault_pb2.StartExperimentRequest()),
        grpc.StatusCode.INVALID_ARGUMENT,
        "name: required",
    )
    started = await api.StartExperiment(fault_pb2.StartExperimentRequest(name="e1"))
    assert started.experiment.state == fault_pb2.EXPERIMENT_STATE_RUNNING
    await expect_error(
        api.StartExperiment(fault_pb2.StartExperimentRequest(name="e1")),
        grpc.StatusCode.FAILED_PRECONDITION,
        "already running",
    )
    listed = await api.ListExperiments(fault_pb2.ListExperimentsRequest())
    assert [e.name for e in listed.experiments] == ["e1"]
    stopped = await api.StopExperiment(fault_pb2.StopExperimentRequest(name="e1"))
    assert stopped.experiment.state == fault_pb2.EXPERIMENT_STATE_STOPPED
    await expect_error(
        api.StopExperiment(fault_pb2.StopExperimentRequest(name="e1")),
        grpc.StatusCode.FAILED_PRECONDITION,
        "not running",
    )


async def test_redis_down_is_unavailable_and_applies_nothing(start_fault: StartFault) -> None:
    channel = (await start_fault(fault_config(f"redis://127.0.0.1:{free_port()}/0"))).channel
    api = fault_pb2_grpc.FaultServiceStub(channel)
    await expect_error(
        api.CreateExperiment(create("e1")), grpc.StatusCode.UNAVAILABLE, "Redis is unreachable"
    )
    await expect_error(
        api.StartExperiment(fault_pb2.StartExperimentRequest(name="e1")),
        grpc.StatusCode.UNAVAILABLE,
        "no fault was changed",
    )
    # EmergencyStop still works: it needs nothing but memory.
    stopped = await api.EmergencyStop(fault_pb2.EmergencyStopRequest(reason="test"))
    assert list(stopped.stopped) == []


class RtdsClient:
    """Envoy's side of one RTDS stream."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.requests: asyncio.Queue[discovery_pb2.DiscoveryRequest | None] = asyncio.Queue()
        stub = rtds_pb2_grpc.RuntimeDiscoveryServiceStub(channel)
        self.call = stub.StreamRuntime(self._requests())

    async def _requests(self) -> AsyncIterator[discovery_pb2.DiscoveryRequest]:
        while (request := await self.requests.get()) is not None:
            yield request

    async def send(self, **fields: Any) -> None:
        await self.requests.put(
            discovery_pb2.DiscoveryRequest(
                type_url=TYPE_URL, resource_names=[RTDS_RESOURCE], **fields
            )
        )

    async def receive(self) -> tuple[discovery_pb2.DiscoveryResponse, dict[str, float]]:
        response: discovery_pb2.DiscoveryResponse = await asyncio.wait_for(self.call.read(), 5)
        (wrapped,) = response.resources
        resource = discovery_pb2.Resource()
        assert wrapped.Unpack(resource)
        assert resource.name == RTDS_RESOURCE
        assert resource.ttl.ToMilliseconds() == 2000
        runtime = rtds_pb2.Runtime()
        assert resource.resource.Unpack(runtime)
        return response, dict(runtime.layer.items())

    async def receive_until(
        self, wanted: Callable[[dict[str, float]], bool]
    ) -> tuple[discovery_pb2.DiscoveryResponse, dict[str, float]]:
        """Skip heartbeats (and the reload after a start) until a layer matches."""
        for _ in range(20):
            response, layer = await self.receive()
            if wanted(layer):
                return response, layer
        raise AssertionError(f"no matching layer; last: {layer}")


async def test_rtds_pushes_changes_heartbeats_and_counts_nacks(
    start_fault: StartFault, redis_client: aioredis.Redis, redis_process: str
) -> None:
    channel = (await start_fault(fault_config(redis_process))).channel
    api = fault_pb2_grpc.FaultServiceStub(channel)
    envoy = RtdsClient(channel)
    await envoy.send()
    first, layer = await envoy.receive()
    assert layer == {}  # nothing running: an empty layer
    await envoy.send(version_info=first.version_info, response_nonce=first.nonce)  # ACK
    await api.CreateExperiment(create("e1"))
    await api.StartExperiment(fault_pb2.StartExperimentRequest(name="e1"))
    pushed, layer = await envoy.receive_until(bool)
    assert layer == {
        "fault.route.chat.abort.abort_percent": 50,
        "fault.route.chat.abort.http_status": 503,
    }
    assert pushed.version_info != first.version_info
    nacks = REGISTRY.get_sample_value("llmproxy_fault_rtds_nacks_total") or 0.0
    await envoy.send(
        version_info=first.version_info,
        response_nonce=pushed.nonce,
        error_detail=status_pb2.Status(code=3, message="bad runtime"),
    )
    heartbeat, layer = await envoy.receive()  # the same resource again, renewing its TTL
    assert heartbeat.version_info == pushed.version_info
    assert heartbeat.nonce != pushed.nonce
    assert "fault.route.chat.abort.abort_percent" in layer
    assert REGISTRY.get_sample_value("llmproxy_fault_rtds_nacks_total") == nacks + 1
    await api.EmergencyStop(fault_pb2.EmergencyStopRequest(reason="test"))
    await envoy.receive_until(lambda layer: layer == {})
    await envoy.requests.put(None)


async def test_experiments_survive_a_restart(
    start_fault: StartFault, redis_client: aioredis.Redis, redis_process: str
) -> None:
    async with served(serve(fault_config(redis_process))) as first:
        api = fault_pb2_grpc.FaultServiceStub(first.channel)
        await api.CreateExperiment(create("kept"))
        await api.StartExperiment(fault_pb2.StartExperimentRequest(name="kept"))
    channel = (await start_fault(fault_config(redis_process))).channel
    api = fault_pb2_grpc.FaultServiceStub(channel)
    found = await api.GetExperiment(fault_pb2.GetExperimentRequest(name="kept"))
    assert found.experiment.state == fault_pb2.EXPERIMENT_STATE_RUNNING
    assert found.experiment.runs == 1
    envoy = RtdsClient(channel)
    await envoy.send()
    _, layer = await envoy.receive_until(bool)  # the runner reloads within a tick
    assert layer["fault.route.chat.abort.abort_percent"] == 50
    await envoy.requests.put(None)


async def test_service_faults_reach_every_instance_of_the_target_service(
    redis_client: aioredis.Redis, redis_process: str
) -> None:
    async with AsyncExitStack() as stack:
        config = fault_config(redis_process)

        async def start_router() -> Served:
            # A bare server registered as a router instance: only the chaos agent it carries.
            access = access_control(config, redis_client, service="router")
            bare = start_server(
                ServiceSettings(grpc_port=0, metrics_port=0),
                lambda _: (),
                service="router",
                access=access,
                redis=redis_client,
            )
            return await stack.enter_async_context(served(bare))

        async def held(router: Served) -> list[str]:
            agent = agent_pb2_grpc.ChaosAgentServiceStub(router.channel)
            reply = await agent.GetStress(agent_pb2.GetStressRequest())
            return sorted(s.experiment for s in reply.stresses)

        registry = InstanceRegistry(redis_client)
        routers = [await start_router(), await start_router()]
        await eventually(lambda: registry.live("router"), lambda found: len(found) == 2)
        fault = await stack.enter_async_context(served(serve(config)))
        api = fault_pb2_grpc.FaultServiceStub(fault.channel)
        stress = [
            fault_pb2.Fault(cpu=fault_pb2.CpuFault(cores=0.05)),
            fault_pb2.Fault(memory=fault_pb2.MemoryFault(megabytes=8)),
        ]
        request = fault_pb2.CreateExperimentRequest(
            name="squeeze",
            target=fault_pb2.Target(service="router"),
            faults=stress,
            severity=fault_pb2.SEVERITY_LOW,
            duration=duration_pb2.Duration(seconds=30),
        )
        both = ["squeeze:cpu", "squeeze:memory"]
        await api.CreateExperiment(request)
        started = await api.StartExperiment(fault_pb2.StartExperimentRequest(name="squeeze"))
        assert [await held(r) for r in routers] == [both, both]
        ids = sorted(f"router {i.instance_id}" for i in await registry.live("router"))
        assert sorted(started.experiment.affected) == ids
        # A router that starts during the run gets the stress on the runner's next tick.
        routers.append(await start_router())
        await eventually(lambda: held(routers[2]), lambda found: found == both, timeout_s=10)
        found = await api.GetExperiment(fault_pb2.GetExperimentRequest(name="squeeze"))
        assert len(found.experiment.affected) == 3
        await api.StopExperiment(fault_pb2.StopExperimentRequest(name="squeeze"))
        assert [await held(r) for r in routers] == [[], [], []]
        # A service with no instance registered: the experiment is rolled back at once.
        request.name = "unreachable"
        request.target.service = "authz"
        await api.CreateExperiment(request)
        started = await api.StartExperiment(fault_pb2.StartExperimentRequest(name="unreachable"))
        assert started.experiment.state == fault_pb2.EXPERIMENT_STATE_ROLLED_BACK
        assert started.experiment.end_reason == (
            "agent_error: chaos agents of authz: no live instance is registered"
        )
