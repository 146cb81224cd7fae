"""The instance registry and the agents' Terminate RPC, on an in-process fault service."""

from __future__ import annotations

import os

import grpc
import pytest
import redis.asyncio as aioredis
from google.protobuf import duration_pb2

from llmproxy._gen.fault.v1 import agent_pb2, agent_pb2_grpc, fault_pb2
from llmproxy.common.chaos.registry import InstanceRegistry
from llmproxy.common.settings import ControlSettings
from llmproxy.fault.errors import WrongStateError
from llmproxy.fault.kill import Killer
from tests.harness.waiting import eventually
from tests.integration.fault.conftest import StartFault, fault_config


def kill_experiment(severity: int) -> fault_pb2.Experiment:
    return fault_pb2.Experiment(
        name="k",
        target=fault_pb2.Target(service="fault"),
        faults=[fault_pb2.Fault(kill_instance=fault_pb2.KillInstanceFault())],
        severity=severity,  # type: ignore[arg-type]
        duration=duration_pb2.Duration(seconds=30),
    )


async def test_instances_register_and_only_the_named_one_may_be_terminated_by_services(
    start_fault: StartFault, redis_client: aioredis.Redis, redis_process: str
) -> None:
    served = await start_fault(fault_config(redis_process))
    registry = InstanceRegistry(redis_client)
    found = await eventually(lambda: registry.live("fault"), bool, timeout_s=5)
    [me] = found
    assert me.address == f"127.0.0.1:{served.port}"
    assert me.pid == os.getpid()

    token = os.environ[ControlSettings().service_token_env]
    killer = Killer(registry, timeout_s=2, service_token=token)
    assert [i.instance_id for i in await killer.healthy("fault")] == [me.instance_id]
    # The one healthy instance: only a CRITICAL experiment may kill it.
    with pytest.raises(WrongStateError, match="killing the last one needs severity CRITICAL"):
        await killer.plan(kill_experiment(fault_pb2.SEVERITY_HIGH))
    plan = await killer.plan(kill_experiment(fault_pb2.SEVERITY_CRITICAL))
    assert plan is not None
    assert plan.victim == me

    wrong = agent_pb2.TerminateRequest(experiment="k", instance_id="fault-000000000000")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await agent_pb2_grpc.ChaosAgentServiceStub(served.internal).Terminate(wrong)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert f"instance_id: this is {me.instance_id}" in (caught.value.details() or "")
    # Not even an admin may: only the stack's services.
    right = agent_pb2.TerminateRequest(experiment="k", instance_id=me.instance_id)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await agent_pb2_grpc.ChaosAgentServiceStub(served.channel).Terminate(right)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_stopped_instance_leaves_the_registry(
    start_fault: StartFault, redis_client: aioredis.Redis, redis_process: str
) -> None:
    served = await start_fault(fault_config(redis_process))
    registry = InstanceRegistry(redis_client)
    await eventually(lambda: registry.live("fault"), bool, timeout_s=5)
    await served.running.stop(0)
    assert await registry.live("fault") == []
