"""The experiment life cycle and the runner, against fakeredis, a fake clock and fake stats."""

from __future__ import annotations

import fakeredis
import pytest
from google.protobuf import duration_pb2, timestamp_pb2
from prometheus_client import REGISTRY
from redis.exceptions import ConnectionError as RedisConnectionError

from llmproxy._gen.fault.v1 import fault_pb2
from llmproxy.fault.controller import Controller
from llmproxy.fault.envoy_stats import StatsUnavailable, TrafficSample
from llmproxy.fault.errors import (
    ExperimentExistsError,
    StoreUnavailableError,
    UnknownExperimentError,
    WrongStateError,
)
from llmproxy.fault.runner import Runner, due
from llmproxy.fault.store import RedisExperimentStore
from llmproxy.fault.validation import Known

KNOWN = Known(("chat", "embeddings", "models"), ("demo",), ("router",), 64)
T0 = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class Stats:
    """Cumulative client-listener counters that a test drives."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.requests = 0
        self.successes = 0
        self.p99: float | None = 5.0
        self.down = False

    def add(self, requests: int, successes: int) -> None:
        self.requests += requests
        self.successes += successes

    async def __call__(self) -> TrafficSample:
        if self.down:
            raise StatsUnavailable("envoy admin down")
        return TrafficSample(self.clock.now, self.requests, self.successes, self.p99)


@pytest.fixture
def controller(redis: fakeredis.FakeAsyncRedis, clock: Clock) -> Controller:
    return Controller(RedisExperimentStore(redis, "test:fault"), KNOWN, None, clock)


def create(name: str = "exp", **fields: object) -> fault_pb2.CreateExperimentRequest:
    request = fault_pb2.CreateExperimentRequest(
        name=name,
        target=fault_pb2.Target(route="chat"),
        faults=[fault_pb2.Fault(abort=fault_pb2.AbortFault(percent=50, http_status=503))],
        severity=fault_pb2.SEVERITY_HIGH,
        duration=duration_pb2.Duration(seconds=60),
    )
    for key, value in fields.items():
        getattr(request, key).CopyFrom(value)
    return request


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_life_cycle_and_errors(controller: Controller, clock: Clock) -> None:
    await controller.create(create())
    with pytest.raises(ExperimentExistsError, match="already exists"):
        await controller.create(create())
    with pytest.raises(UnknownExperimentError, match="no experiment named 'ghost'"):
        await controller.start("ghost")
    started = await controller.start("exp")
    assert started.state == fault_pb2.EXPERIMENT_STATE_RUNNING
    assert started.faults_applied == ["abort"]
    assert started.ended_at.seconds == int(T0) + 60
    assert [e.name for e in controller.running()] == ["exp"]
    with pytest.raises(WrongStateError, match="already running"):
        await controller.start("exp")
    await controller.create(create("other"))
    with pytest.raises(WrongStateError, match="same target"):
        await controller.start("other")
    clock.now += 10
    stopped = await controller.stop("exp")
    assert stopped.state == fault_pb2.EXPERIMENT_STATE_STOPPED
    assert stopped.end_reason == "stopped"
    assert stopped.ended_at.seconds == int(T0) + 10
    assert controller.running() == []
    with pytest.raises(WrongStateError, match="not running"):
        await controller.stop("exp")
    assert (await controller.get("exp")).state == fault_pb2.EXPERIMENT_STATE_STOPPED


async def test_changes_wake_rtds_waiters(controller: Controller) -> None:
    seen = controller.version
    await controller.create(create())
    await controller.start("exp")
    assert await controller.wait_change(seen) > seen


async def test_running_experiments_survive_a_restart(
    redis: fakeredis.FakeAsyncRedis, controller: Controller, clock: Clock
) -> None:
    await controller.create(create("long"))
    await controller.start("long")
    await controller.create(create("short", target=fault_pb2.Target(route="models")))
    await controller.start("short")
    clock.now += 61  # "short" is over by the time the service is back; "long" too
    await controller.create(create("later", target=fault_pb2.Target(route="embeddings")))
    await controller.start("later")
    clock.now += 5
    again = Controller(RedisExperimentStore(redis, "test:fault"), KNOWN, None, clock)
    await again.load()
    assert [e.name for e in again.running()] == ["later"]
    ended = await again.get("long")
    assert ended.state == fault_pb2.EXPERIMENT_STATE_COMPLETED
    assert ended.end_reason == "completed"


async def test_redis_down_applies_nothing(
    redis: fakeredis.FakeAsyncRedis, controller: Controller, monkeypatch: pytest.MonkeyPatch
) -> None:
    await controller.create(create())

    async def broken(*args: object, **kwargs: object) -> None:
        raise RedisConnectionError("Connection refused")

    monkeypatch.setattr(redis, "hset", broken)
    monkeypatch.setattr(redis, "hget", broken)
    with pytest.raises(StoreUnavailableError, match="Redis is unreachable"):
        await controller.start("exp")
    assert controller.running() == []


async def test_emergency_stop_clears_everything_even_without_redis(
    redis: fakeredis.FakeAsyncRedis, controller: Controller, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, route in (("a", "chat"), ("b", "models")):
        await controller.create(create(name, target=fault_pb2.Target(route=route)))
        await controller.start(name)
    later = timestamp_pb2.Timestamp(seconds=int(T0) + 3600)
    await controller.create(create("scheduled", start_time=later))
    before = metric("llmproxy_fault_emergency_stops_total")
    real_hset = redis.hset

    async def broken(*args: object, **kwargs: object) -> None:
        raise RedisConnectionError("Connection refused")

    monkeypatch.setattr(redis, "hset", broken)
    assert await controller.emergency_stop("pager") == ["a", "b"]
    assert controller.running() == []
    assert metric("llmproxy_fault_emergency_stops_total") == before + 1
    monkeypatch.setattr(redis, "hset", real_hset)
    await controller.flush_unsaved()  # Redis back: the ends are recorded
    stored = await RedisExperimentStore(redis, "test:fault").get("a")
    assert stored is not None
    assert stored.state == fault_pb2.EXPERIMENT_STATE_STOPPED
    assert stored.end_reason == "emergency stop: pager"
    # With Redis back, a second stop also cancels the schedule of what has not started yet.
    await controller.emergency_stop("again")
    cancelled = await controller.get("scheduled")
    assert cancelled.state == fault_pb2.EXPERIMENT_STATE_STOPPED
    assert not due(cancelled, T0 + 3600)


async def test_runner_ends_expired_and_starts_scheduled(
    controller: Controller, clock: Clock
) -> None:
    stats = Stats(clock)
    runner = Runner(controller, stats, clock, 0.25, 1.0)
    await controller.create(create("now"))
    await controller.start("now")
    start = timestamp_pb2.Timestamp(seconds=int(T0) + 30)
    await controller.create(
        create("later", target=fault_pb2.Target(route="models"), start_time=start)
    )
    await runner.tick()
    assert [e.name for e in controller.running()] == ["now"]
    clock.now += 30
    await runner.tick()
    assert sorted(e.name for e in controller.running()) == ["later", "now"]
    clock.now += 30
    await runner.tick()
    assert [e.name for e in controller.running()] == ["later"]
    assert (await controller.get("now")).state == fault_pb2.EXPERIMENT_STATE_COMPLETED


async def test_runner_rolls_back_a_breached_hypothesis(
    controller: Controller, clock: Clock
) -> None:
    stats = Stats(clock)
    runner = Runner(controller, stats, clock, 0.25, 1.0)
    hypothesis = fault_pb2.SteadyStateHypothesis(min_success_ratio=0.9)
    await controller.create(create(hypothesis=hypothesis))
    await controller.start("exp")
    await controller.create(
        create("quiet", target=fault_pb2.Target(route="models"), hypothesis=hypothesis)
    )
    before = metric("llmproxy_fault_rollbacks_total", reason="success_ratio")
    await runner.tick()  # baseline sample
    stats.add(100, 99)
    clock.now += 1
    await runner.tick()
    assert [e.name for e in controller.running()] == ["exp"]
    assert controller.running()[0].observed.requests == 100
    stats.down = True  # no stats, no verdict: never a rollback on missing data
    clock.now += 1
    await runner.tick()
    stats.down = False
    stats.add(100, 40)
    clock.now += 1
    await runner.tick()
    assert controller.running() == []
    rolled = await controller.get("exp")
    assert rolled.state == fault_pb2.EXPERIMENT_STATE_ROLLED_BACK
    assert rolled.end_reason.startswith("success_ratio: success ratio")
    assert metric("llmproxy_fault_rollbacks_total", reason="success_ratio") == before + 1


def test_due_follows_start_time_and_interval() -> None:
    experiment = fault_pb2.Experiment(
        state=fault_pb2.EXPERIMENT_STATE_PENDING,
        duration=duration_pb2.Duration(seconds=60),
        start_time=timestamp_pb2.Timestamp(seconds=1000),
    )
    assert not due(experiment, 999)
    assert due(experiment, 1000)
    assert not due(experiment, 1060)  # its whole run would be over already
    experiment.interval.seconds = 600
    experiment.runs = 1
    experiment.started_at.seconds = 1000
    experiment.state = fault_pb2.EXPERIMENT_STATE_COMPLETED
    assert not due(experiment, 1100)
    assert due(experiment, 1600)
    experiment.state = fault_pb2.EXPERIMENT_STATE_ROLLED_BACK
    assert not due(experiment, 1600)
    assert not due(fault_pb2.Experiment(state=fault_pb2.EXPERIMENT_STATE_PENDING), 5000)
