"""ChaosAgentService's answers: what was applied, cleared and active, and the refusals."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration

from llmproxy._gen.fault.v1 import agent_pb2
from llmproxy.common.chaos.agent import ChaosAgentServicer
from llmproxy.common.chaos.engine import Stress, StressEngine, StressLimits
from tests.unit.grpc_fakes import Aborted, FakeContext


class NullWorker:
    def __init__(self, stress: Stress) -> None:
        self.stress = stress

    def stop(self) -> None:
        pass


CONTEXT: Any = FakeContext()


@pytest.fixture
def engine() -> Iterator[StressEngine]:
    engine = StressEngine(StressLimits(), start=NullWorker, available_mb=lambda: 100_000)
    yield engine
    engine.clear()


@pytest.fixture
def agent(engine: StressEngine) -> ChaosAgentServicer:
    return ChaosAgentServicer(engine)


def seconds(value: float) -> Duration:
    duration = Duration()
    duration.FromNanoseconds(int(value * 1e9))
    return duration


def cpu(experiment: str, cores: float, duration_s: float = 60) -> agent_pb2.ApplyStressRequest:
    return agent_pb2.ApplyStressRequest(
        experiment=experiment, cpu=agent_pb2.CpuStress(cores=cores), duration=seconds(duration_s)
    )


async def test_apply_answers_what_was_applied(agent: ChaosAgentServicer) -> None:
    reply = await agent.ApplyStress(cpu("exp-1", 0.25, 30), CONTEXT)
    assert not reply.replaced
    assert reply.applied.experiment == "exp-1"
    assert reply.applied.cpu.cores == 0.25
    assert 29 < reply.applied.remaining.ToTimedelta().total_seconds() <= 30
    again = await agent.ApplyStress(
        agent_pb2.ApplyStressRequest(
            experiment="exp-1",
            memory=agent_pb2.MemoryStress(megabytes=64),
            duration=seconds(1.5),
        ),
        CONTEXT,
    )
    assert again.replaced
    assert again.applied.WhichOneof("stress") == "memory"
    assert again.applied.memory.megabytes == 64


async def test_get_and_clear_list_the_stresses(agent: ChaosAgentServicer) -> None:
    for name in ("b", "a", "c"):
        await agent.ApplyStress(cpu(name, 0.1), CONTEXT)
    listed = await agent.GetStress(agent_pb2.GetStressRequest(), CONTEXT)
    assert [s.experiment for s in listed.stresses] == ["a", "b", "c"]
    one = await agent.ClearStress(agent_pb2.ClearStressRequest(experiment="b"), CONTEXT)
    assert [s.experiment for s in one.cleared] == ["b"]
    rest = await agent.ClearStress(agent_pb2.ClearStressRequest(), CONTEXT)
    assert [s.experiment for s in rest.cleared] == ["a", "c"]
    assert not (await agent.GetStress(agent_pb2.GetStressRequest(), CONTEXT)).stresses


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (cpu("", 0.5), "experiment is required"),
        (cpu("x" * 129, 0.5), "experiment must be at most 128 characters"),
        (
            agent_pb2.ApplyStressRequest(experiment="e", duration=seconds(5)),
            "stress is required: set cpu or memory",
        ),
        (
            agent_pb2.ApplyStressRequest(experiment="e", cpu=agent_pb2.CpuStress(cores=0.5)),
            "duration is required",
        ),
        (
            agent_pb2.ApplyStressRequest(
                experiment="e",
                cpu=agent_pb2.CpuStress(cores=0.5),
                duration=Duration(seconds=5, nanos=-1),
            ),
            "duration is malformed: seconds and nanos differ in sign",
        ),
        (cpu("e", 2.0), "cpu.cores must be > 0 and <= 1 (the agent's cap), got 2"),
        (cpu("e", 0.5, 7200), "duration must be > 0 s and <= 3600 s (the agent's cap), got 7200 s"),
        (
            agent_pb2.ApplyStressRequest(
                experiment="e", memory=agent_pb2.MemoryStress(megabytes=-5), duration=seconds(5)
            ),
            "memory.megabytes must be > 0 and <= 1024 (the agent's cap), got -5",
        ),
    ],
)
async def test_bad_requests_are_invalid_argument_naming_the_field(
    agent: ChaosAgentServicer,
    engine: StressEngine,
    request_: agent_pb2.ApplyStressRequest,
    message: str,
) -> None:
    with pytest.raises(Aborted) as raised:
        await agent.ApplyStress(request_, CONTEXT)
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details == message
    assert engine.active() == []


async def test_over_the_shared_cap_is_resource_exhausted(agent: ChaosAgentServicer) -> None:
    await agent.ApplyStress(cpu("a", 0.7), CONTEXT)
    with pytest.raises(Aborted) as raised:
        await agent.ApplyStress(cpu("b", 0.7), CONTEXT)
    assert raised.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "passes the agent's cap of 1 cores" in raised.value.details


async def test_clear_refuses_an_overlong_name(agent: ChaosAgentServicer) -> None:
    with pytest.raises(Aborted) as raised:
        await agent.ClearStress(agent_pb2.ClearStressRequest(experiment="x" * 500), CONTEXT)
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
