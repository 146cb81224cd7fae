"""kill_instance and redis_unavailable experiments on a stack running 2 instances of every
service (2 fault instances, one of them the leader), under steady client traffic.

Each experiment is created and started through Envoy's control listener (whichever fault
instance answers, a start reaches the leader) and must complete with its steady-state
hypothesis held. The shares of client requests that succeeded are printed (`-s`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import grpc
import httpx
import pytest
import redis.asyncio as aioredis
from google.protobuf import duration_pb2
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from llmproxy._gen.fault.v1 import agent_pb2, agent_pb2_grpc, fault_pb2, fault_pb2_grpc
from llmproxy.common.chaos.registry import InstanceRegistry
from llmproxy.common.credentials import bearer_metadata
from llmproxy.devstack.process import ManagedProcess
from llmproxy.devstack.stack import Stack
from llmproxy.fault.lease import Holder, slot_key
from tests.e2e.conftest import create_key
from tests.harness import logs
from tests.harness.control import admin_token, control_channel
from tests.harness.providers_stack import providers_stack
from tests.harness.waiting import eventually

pytestmark = pytest.mark.chaos

SERVICES = ("router", "ratelimit", "authz", "health", "fault")
RATE_PER_S = 25


@dataclass
class Fleet:
    """The stack, a client key, and a client of the fault API through Envoy."""

    stack: Stack
    fakes: dict[str, ManagedProcess]
    key: str

    def api(self, channel: object) -> fault_pb2_grpc.FaultServiceStub:
        return fault_pb2_grpc.FaultServiceStub(channel)  # type: ignore[arg-type]

    def run(self, request: fault_pb2.CreateExperimentRequest) -> fault_pb2.Experiment:
        with control_channel(self.stack) as channel:
            api = self.api(channel)
            api.CreateExperiment(request, timeout=10)
            return api.StartExperiment(
                fault_pb2.StartExperimentRequest(name=request.name), timeout=20
            ).experiment

    def get(self, name: str) -> fault_pb2.Experiment:
        with control_channel(self.stack) as channel:
            return (
                self.api(channel)
                .GetExperiment(fault_pb2.GetExperimentRequest(name=name), timeout=10)
                .experiment
            )

    def redis(self, timeout_s: float = 5.0) -> aioredis.Redis:
        return aioredis.Redis.from_url(self.stack.config.redis.url, socket_timeout=timeout_s)

    async def leader(self) -> Holder | None:
        client = self.redis()
        try:
            prefix = self.stack.config.services.fault.key_prefix
            value = await client.get(slot_key(prefix, "leader"))
        finally:
            await client.aclose()
        return None if value is None else Holder.parse(value)


@dataclass
class Traffic:
    """Steady chat completions through Envoy: each one's status, by phase."""

    statuses: dict[str, Counter[int]] = field(default_factory=dict)
    phase: str = "before"

    def ratio(self, phase: str) -> float:
        seen = self.statuses.get(phase, Counter())
        return sum(n for s, n in seen.items() if s < 500) / max(1, sum(seen.values()))


@contextlib.asynccontextmanager
async def steady_traffic(fleet: Fleet) -> AsyncIterator[Traffic]:
    envoy = fleet.stack.config.envoy
    url = f"http://{envoy.host}:{envoy.listener_port}/v1/chat/completions"
    body = {"model": "m", "messages": [{"role": "user", "content": "hello"}]}
    headers = {"authorization": f"Bearer {fleet.key}"}
    traffic = Traffic()

    async def one(client: httpx.AsyncClient, phase: str) -> None:
        try:
            status = (await client.post(url, json=body, headers=headers)).status_code
        except httpx.HTTPError:
            status = 599
        traffic.statuses.setdefault(phase, Counter())[status] += 1

    async def send() -> None:
        async with httpx.AsyncClient(timeout=10) as client, asyncio.TaskGroup() as group:
            while True:
                group.create_task(one(client, traffic.phase))
                await asyncio.sleep(1 / RATE_PER_S)

    task = asyncio.create_task(send())
    try:
        yield traffic
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.fixture(scope="module")
def fleet_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    workdir = tmp_path_factory.mktemp("fleet-stack")
    instances = dict.fromkeys(SERVICES, 2)
    with providers_stack(workdir, ("primary",), timeout_s=90, instances=instances) as started:
        key = create_key(started.stack, tenant="fleet", user="pytest").secret
        yield Fleet(started.stack, started.fakes, key)


@pytest.fixture
async def fleet(request: pytest.FixtureRequest, fleet_stack: Fleet) -> Fleet:
    logs.watch(request.node, *fleet_stack.stack.processes.values())
    # Every instance back and serving before each test (a kill leaves one down).
    for process in fleet_stack.stack.processes.values():
        if not process.running():
            process.start()
            await process.wait_ready(30)
    return fleet_stack


def experiment(
    name: str, target: fault_pb2.Target, fault: fault_pb2.Fault, seconds: int, **fields: object
) -> fault_pb2.CreateExperimentRequest:
    return fault_pb2.CreateExperimentRequest(
        name=name,
        target=target,
        faults=[fault],
        duration=duration_pb2.Duration(seconds=seconds),
        **fields,  # type: ignore[arg-type]
    )


async def completed(fleet: Fleet, name: str, timeout_s: float) -> fault_pb2.Experiment:
    return await eventually(
        lambda: fleet.get(name),
        lambda e: e.state != fault_pb2.EXPERIMENT_STATE_RUNNING,
        what=f"{name} over",
        timeout_s=timeout_s,
        # A killed fault instance answers nothing until Envoy's health checks drop it.
        ignoring=(grpc.RpcError,),
    )


def process_at(fleet: Fleet, service: str, address: str) -> ManagedProcess:
    settings = getattr(fleet.stack.config.services, service)
    for index, instance in enumerate(settings.all_instances()):
        if address == f"{instance.host}:{instance.grpc_port}":
            return fleet.stack.processes[f"{service}-{index}" if index else service]
    raise AssertionError(f"no {service} instance at {address}")


# Every service: Envoy retries a check or a request lost with its instance on the other one,
# and its health checks drop the dead instance within about two seconds (envoyconf/resilience.py).
@pytest.mark.parametrize("service", SERVICES)
async def test_kill_instance_ends_one_instance_and_the_hypothesis_holds(
    fleet: Fleet, service: str
) -> None:
    client = fleet.redis()
    registry = InstanceRegistry(client)
    before = await eventually(
        lambda: registry.live(service), lambda found: len(found) == 2, timeout_s=10
    )
    name = f"kill-one-{service}"
    async with steady_traffic(fleet) as traffic:
        await asyncio.sleep(2)
        traffic.phase = "experiment"
        started = fleet.run(
            experiment(
                name,
                fault_pb2.Target(service=service),
                fault_pb2.Fault(kill_instance=fault_pb2.KillInstanceFault()),
                10,  # the kill at its start, Envoy drops the instance within ~2 s
                severity=fault_pb2.SEVERITY_HIGH,  # 1 of 2 instances: 50%
                hypothesis=fault_pb2.SteadyStateHypothesis(min_success_ratio=0.95),
            )
        )
        assert started.state == fault_pb2.EXPERIMENT_STATE_RUNNING, started.end_reason
        [affected] = started.affected
        victim_id = affected.split(" ")[1]
        [victim] = [i for i in before if i.instance_id == victim_id]
        process = process_at(fleet, service, victim.address)
        await eventually(lambda: not process.running(), what="the victim gone", timeout_s=5)
        record = await completed(fleet, name, timeout_s=40)
        traffic.phase = "after"
        await asyncio.sleep(2)
    print(
        f"\nkill_instance {service}: client success before {traffic.ratio('before'):.1%}, "
        f"during {traffic.ratio('experiment'):.1%} "
        f"({sum(traffic.statuses['experiment'].values())} requests), "
        f"after {traffic.ratio('after'):.1%}; verdict: {record.observed.verdict}"
    )
    assert record.state == fault_pb2.EXPERIMENT_STATE_COMPLETED, record.end_reason
    # Judged on real evidence, not waved through for lack of it.
    assert record.observed.requests >= 20
    assert record.observed.success_ratio >= 0.95
    assert [i.instance_id for i in await registry.live(service)] == [
        i.instance_id for i in before if i.instance_id != victim_id
    ]
    await client.aclose()
    assert traffic.ratio("after") >= 0.99  # the survivor serves everything


async def test_cpu_and_memory_stress_reach_every_instance_and_their_stop_clears_them(
    fleet: Fleet,
) -> None:
    client = fleet.redis()
    instances = await eventually(
        lambda: InstanceRegistry(client).live("health"), lambda found: len(found) == 2
    )
    await client.aclose()
    metadata = bearer_metadata(admin_token(fleet.stack))

    def held(address: str) -> list[str]:
        with grpc.insecure_channel(address) as channel:
            reply = agent_pb2_grpc.ChaosAgentServiceStub(channel).GetStress(
                agent_pb2.GetStressRequest(), timeout=5, metadata=metadata
            )
        return sorted(s.experiment for s in reply.stresses)

    request = experiment(
        "squeeze-health",
        fault_pb2.Target(service="health"),
        fault_pb2.Fault(cpu=fault_pb2.CpuFault(cores=0.05)),
        60,
        severity=fault_pb2.SEVERITY_LOW,
    )
    request.faults.append(fault_pb2.Fault(memory=fault_pb2.MemoryFault(megabytes=16)))
    started = fleet.run(request)
    assert started.state == fault_pb2.EXPERIMENT_STATE_RUNNING, started.end_reason
    assert sorted(started.affected) == sorted(f"health {i.instance_id}" for i in instances)
    both = ["squeeze-health:cpu", "squeeze-health:memory"]
    assert [held(i.address) for i in instances] == [both, both]
    with control_channel(fleet.stack) as channel:
        fleet.api(channel).StopExperiment(
            fault_pb2.StopExperimentRequest(name="squeeze-health"), timeout=10
        )
    assert [held(i.address) for i in instances] == [[], []]


async def test_redis_unavailable_pauses_redis_for_the_run_and_the_hypothesis_holds(
    fleet: Fleet,
) -> None:
    leader = await eventually(fleet.leader, what="a fault leader", timeout_s=10)
    probe = fleet.redis(timeout_s=0.3)
    unanswered = 0
    async with steady_traffic(fleet) as traffic:
        await asyncio.sleep(2)
        traffic.phase = "experiment"
        started = fleet.run(
            experiment(
                "redis-outage",
                fault_pb2.Target(dependency="redis"),
                fault_pb2.Fault(redis_unavailable=fault_pb2.RedisUnavailableFault()),
                6,
                severity=fault_pb2.SEVERITY_CRITICAL,
                confirm_critical=True,
                hypothesis=fault_pb2.SteadyStateHypothesis(min_success_ratio=0.95),
            )
        )
        assert started.state == fault_pb2.EXPERIMENT_STATE_RUNNING, started.end_reason
        until = time.monotonic() + 5
        while time.monotonic() < until:
            try:
                await probe.ping()
            except (RedisTimeoutError, RedisConnectionError):
                unanswered += 1
        await eventually(probe.ping, timeout_s=3, ignoring=(RedisTimeoutError,))
        traffic.phase = "after"
        record = await completed(fleet, "redis-outage", timeout_s=20)
        await asyncio.sleep(1)
    await probe.aclose()
    print(
        f"\nredis_unavailable: {unanswered} PINGs unanswered in 5 s; client success before "
        f"{traffic.ratio('before'):.1%}, during {traffic.ratio('experiment'):.1%}, after "
        f"{traffic.ratio('after'):.1%}; verdict: {record.observed.verdict}"
    )
    assert unanswered >= 8  # Redis did not answer for most of the run
    assert record.state == fault_pb2.EXPERIMENT_STATE_COMPLETED, record.end_reason
    assert record.observed.requests >= 20
    assert record.observed.success_ratio >= 0.95
    # Judged on the traffic during the pause, not on an empty window after it.
    assert "not enough evidence" not in record.observed.verdict
    assert await fleet.leader() == leader  # the pause cost the leader nothing


async def test_a_breach_while_redis_is_paused_rolls_back_and_redis_answers_again(
    fleet: Fleet,
) -> None:
    # The hypothesis is judged without Redis: an impossible p99 bound is breached during the
    # pause, and the rollback ends the pause long before the experiment's own end.
    await eventually(fleet.leader, what="a fault leader", timeout_s=10)
    async with steady_traffic(fleet):
        await asyncio.sleep(2)
        started_at = time.monotonic()
        started = fleet.run(
            experiment(
                "redis-breach",
                fault_pb2.Target(dependency="redis"),
                fault_pb2.Fault(redis_unavailable=fault_pb2.RedisUnavailableFault()),
                60,
                severity=fault_pb2.SEVERITY_CRITICAL,
                confirm_critical=True,
                hypothesis=fault_pb2.SteadyStateHypothesis(max_p99_ms=0.001),
            )
        )
        assert started.state == fault_pb2.EXPERIMENT_STATE_RUNNING, started.end_reason
        record = await completed(fleet, "redis-breach", timeout_s=30)
    assert record.state == fault_pb2.EXPERIMENT_STATE_ROLLED_BACK, record.end_reason
    assert record.end_reason.startswith("latency_p99"), record.end_reason
    assert time.monotonic() - started_at < 30  # not the experiment's 60 s
    probe = fleet.redis(timeout_s=0.3)
    try:
        assert await probe.ping()
    finally:
        await probe.aclose()
