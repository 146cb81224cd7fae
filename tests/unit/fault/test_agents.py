"""Stresses on every live instance of a service: the agents' calls, through the controller and
the runner, against fakeredis (the instance registry and the store) and a fake agent transport."""

from __future__ import annotations

from collections.abc import Callable

import fakeredis
import pytest
from google.protobuf import duration_pb2
from redis.exceptions import ConnectionError as RedisConnectionError

from llmproxy._gen.fault.v1 import agent_pb2, fault_pb2
from llmproxy.common.chaos.registry import Instance, InstanceRegistry
from llmproxy.fault.agents import AgentError, AgentRequest, Agents, AgentUnreachable
from llmproxy.fault.controller import Controller
from llmproxy.fault.runner import Runner
from llmproxy.fault.store import RedisExperimentStore
from llmproxy.fault.validation import Known
from tests.unit.fault.test_controller import T0, Clock, Stats

KNOWN = Known(("chat",), ("demo",), ("router", "authz"), 64)


class FakeAgents:
    """Every instance's agent: what each holds, and which ones are down or refuse."""

    def __init__(self) -> None:
        self.held: dict[str, dict[str, float]] = {}  # instance id -> stress id -> duration s
        self.down: set[str] = set()
        self.refusing: set[str] = set()
        self.calls: list[tuple[str, str]] = []  # (instance id, "apply <id>" / "clear <id>")

    async def __call__(self, instance: Instance, request: AgentRequest) -> None:
        held = self.held.setdefault(instance.instance_id, {})
        if instance.instance_id in self.down:
            raise AgentUnreachable(f"{instance.instance_id} UNAVAILABLE")
        if isinstance(request, agent_pb2.ApplyStressRequest):
            self.calls.append((instance.instance_id, f"apply {request.experiment}"))
            if instance.instance_id in self.refusing:
                raise AgentError(f"{instance.instance_id} RESOURCE_EXHAUSTED over the cap")
            held[request.experiment] = request.duration.ToTimedelta().total_seconds()
        else:
            self.calls.append((instance.instance_id, f"clear {request.experiment}"))
            held.pop(request.experiment, None)

    def holding(self) -> dict[str, list[str]]:
        return {i: sorted(held) for i, held in self.held.items() if held}


@pytest.fixture
def registry(redis: fakeredis.FakeAsyncRedis, clock: Clock) -> InstanceRegistry:
    return InstanceRegistry(redis, clock)


@pytest.fixture
def fake() -> FakeAgents:
    return FakeAgents()


@pytest.fixture
def controller(
    redis: fakeredis.FakeAsyncRedis, clock: Clock, registry: InstanceRegistry, fake: FakeAgents
) -> Controller:
    agents = Agents(registry, fake)
    return Controller(RedisExperimentStore(redis, "test:fault"), KNOWN, agents, clock)


@pytest.fixture
def runner(controller: Controller, clock: Clock) -> Runner:
    return Runner(controller, Stats(clock), clock, tick_s=0.25, hypothesis_interval_s=1)


@pytest.fixture
def break_registry(
    redis: fakeredis.FakeAsyncRedis, monkeypatch: pytest.MonkeyPatch
) -> Callable[[], None]:
    """Makes the instance registry unreadable, as with Redis down."""

    async def broken(*args: object, **kwargs: object) -> None:
        raise RedisConnectionError("Connection refused")

    return lambda: monkeypatch.setattr(redis, "zrangebyscore", broken)


async def register(registry: InstanceRegistry, service: str, number: int) -> Instance:
    instance = Instance(service, f"{service}-{number}", f"10.0.0.{number}:50051", 100 + number)
    await registry.register(instance)
    return instance


def stress(name: str = "squeeze", service: str = "router") -> fault_pb2.CreateExperimentRequest:
    return fault_pb2.CreateExperimentRequest(
        name=name,
        target=fault_pb2.Target(service=service),
        faults=[
            fault_pb2.Fault(cpu=fault_pb2.CpuFault(cores=0.05)),
            fault_pb2.Fault(memory=fault_pb2.MemoryFault(megabytes=8)),
        ],
        severity=fault_pb2.SEVERITY_LOW,
        duration=duration_pb2.Duration(seconds=60),
    )


BOTH = ["squeeze:cpu", "squeeze:memory"]


async def test_a_stress_reaches_every_live_instance_and_its_end_clears_them_all(
    controller: Controller,
    registry: InstanceRegistry,
    fake: FakeAgents,
    redis: fakeredis.FakeAsyncRedis,
) -> None:
    for number in (1, 2, 3):
        await register(registry, "router", number)
    await register(registry, "authz", 9)  # another service: never stressed
    await controller.create(stress())
    started = await controller.start("squeeze")
    assert started.state == fault_pb2.EXPERIMENT_STATE_RUNNING
    assert fake.holding() == {"router-1": BOTH, "router-2": BOTH, "router-3": BOTH}
    assert list(started.affected) == ["router router-1", "router router-2", "router router-3"]
    # Recorded at once: any fault instance's GetExperiment shows the reach.
    recorded = await RedisExperimentStore(redis, "test:fault").get("squeeze")
    assert recorded is not None
    assert len(recorded.affected) == 3
    assert {d for held in fake.held.values() for d in held.values()} == {60.0}
    await controller.stop("squeeze")
    assert fake.holding() == {}


async def test_an_instance_registered_during_the_run_is_stressed_on_the_next_tick(
    controller: Controller, registry: InstanceRegistry, fake: FakeAgents, clock: Clock
) -> None:
    runner = Runner(controller, Stats(clock), clock, tick_s=0.25, hypothesis_interval_s=1)
    await register(registry, "router", 1)
    await controller.create(stress())
    await controller.start("squeeze")
    await runner.tick()
    assert fake.holding() == {"router-1": BOTH}
    applied = len(fake.calls)
    # A restarted instance registers 20 s into the run: it gets the 40 s left, the other
    # instance is not sent the stress again.
    clock.now = T0 + 20
    await register(registry, "router", 1)  # its heartbeat renews the entry
    await register(registry, "router", 2)
    await runner.tick()
    assert fake.holding() == {"router-1": BOTH, "router-2": BOTH}
    assert fake.held["router-2"] == {"squeeze:cpu": 40.0, "squeeze:memory": 40.0}
    assert [c for c, _ in fake.calls[applied:]] == ["router-2", "router-2"]
    found = await controller.get("squeeze")
    assert list(found.affected) == ["router router-1", "router router-2"]
    await runner.tick()
    assert len(fake.calls) == applied + 2  # nothing new: nothing sent
    # At its end, both are cleared; an instance registering afterwards gets nothing.
    clock.now = T0 + 61
    await register(registry, "router", 1)
    await register(registry, "router", 2)
    await runner.tick()
    assert (await controller.get("squeeze")).state == fault_pb2.EXPERIMENT_STATE_COMPLETED
    assert fake.holding() == {}
    await register(registry, "router", 3)
    await runner.tick()
    assert "router-3" not in fake.held


async def test_an_unreachable_instance_is_skipped_then_reached_and_cleared_without_redis(
    controller: Controller,
    registry: InstanceRegistry,
    fake: FakeAgents,
    runner: Runner,
    break_registry: Callable[[], None],
) -> None:
    await register(registry, "router", 1)
    await register(registry, "router", 2)
    fake.down.add("router-2")
    await controller.create(stress())
    started = await controller.start("squeeze")
    assert started.state == fault_pb2.EXPERIMENT_STATE_RUNNING
    assert list(started.affected) == ["router router-1"]
    fake.down.clear()
    await runner.tick()
    assert fake.holding() == {"router-1": BOTH, "router-2": BOTH}
    # The registry cannot be read: the end still clears the instances it sent the stress.
    break_registry()
    await controller.stop("squeeze")
    assert fake.holding() == {}


async def test_a_start_is_rolled_back_when_no_instance_takes_the_stress(
    controller: Controller, registry: InstanceRegistry, fake: FakeAgents
) -> None:
    await controller.create(stress("none"))
    started = await controller.start("none")
    assert started.state == fault_pb2.EXPERIMENT_STATE_ROLLED_BACK
    assert (
        started.end_reason == "agent_error: chaos agents of router: no live instance is registered"
    )

    await register(registry, "router", 1)
    await register(registry, "router", 2)
    fake.down = {"router-1", "router-2"}
    await controller.create(stress("down"))
    started = await controller.start("down")
    assert started.state == fault_pb2.EXPERIMENT_STATE_ROLLED_BACK
    assert "none of the 2 registered instances answered" in started.end_reason

    # One refuses: rolled back, and the other's stress is cleared.
    fake.down.clear()
    fake.refusing.add("router-2")
    await controller.create(stress("refused"))
    started = await controller.start("refused")
    assert started.state == fault_pb2.EXPERIMENT_STATE_ROLLED_BACK
    assert "router-2 RESOURCE_EXHAUSTED" in started.end_reason
    assert fake.holding() == {}
    assert ("router-1", "apply refused:cpu") in fake.calls


async def test_a_newcomer_that_refuses_is_not_asked_again_every_tick(
    controller: Controller, registry: InstanceRegistry, fake: FakeAgents, clock: Clock
) -> None:
    runner = Runner(controller, Stats(clock), clock, tick_s=0.25, hypothesis_interval_s=1)
    await register(registry, "router", 1)
    await controller.create(stress())
    await controller.start("squeeze")
    fake.refusing.add("router-2")
    await register(registry, "router", 2)
    await runner.tick()
    await runner.tick()
    assert fake.calls.count(("router-2", "apply squeeze:cpu")) == 1
    found = await controller.get("squeeze")
    assert found.state == fault_pb2.EXPERIMENT_STATE_RUNNING
    assert list(found.affected) == ["router router-1"]


async def test_a_new_leader_reaches_only_the_instances_not_in_the_record(
    redis: fakeredis.FakeAsyncRedis,
    registry: InstanceRegistry,
    fake: FakeAgents,
    clock: Clock,
    controller: Controller,
) -> None:
    await register(registry, "router", 1)
    await controller.create(stress())
    await controller.start("squeeze")
    # Another fault instance takes over (same store, fresh memory); a router joins meanwhile.
    successor = Controller(
        RedisExperimentStore(redis, "test:fault"), KNOWN, Agents(registry, fake), clock
    )
    runner = Runner(successor, Stats(clock), clock, tick_s=0.25, hypothesis_interval_s=1)
    await register(registry, "router", 2)
    calls = len(fake.calls)
    await runner.tick()
    assert successor.loaded
    assert [c for c, _ in fake.calls[calls:]] == ["router-2", "router-2"]
    assert list((await successor.get("squeeze")).affected) == [
        "router router-1",
        "router router-2",
    ]
    await successor.stop("squeeze")
    assert fake.holding() == {}
