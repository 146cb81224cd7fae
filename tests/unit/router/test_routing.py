"""Routing strategies: the order each gives a model's targets, and the load Failover keeps."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from llmproxy.router.calls import Failover
from llmproxy.router.providers import ProviderCallError, ProviderClient
from llmproxy.router.routing import Balancer, TargetLoad, measured_targets, target_key
from llmproxy.router.settings import FailoverSettings, ModelSettings, ModelTarget, RoutingSettings
from tests.unit.router.fakes import FakeClient, stream_events

A = ModelTarget(provider="a", model="m-a")
B = ModelTarget(provider="b", model="m-b")
C = ModelTarget(provider="c", model="m-c")
SETTINGS = RoutingSettings(latency_max_age_s=60, latency_ewma_alpha=0.5)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class ScriptedRandom(random.Random):
    """random() answers from a script, so a weighted draw is known in advance."""

    def __init__(self, *values: float) -> None:
        super().__init__(0)
        self.values = list(values)

    def random(self) -> float:
        return self.values.pop(0)


class Latencies:
    """A LatencySource with fixed per-provider answers."""

    def __init__(self, **latency: float) -> None:
        self.latency = latency
        self.asked: list[tuple[str, float]] = []

    def latency_s(self, provider: str, max_age_s: float) -> float | None:
        self.asked.append((provider, max_age_s))
        return self.latency.get(provider)


def weighted(*weights: float | None) -> list[ModelTarget]:
    return [t.model_copy(update={"weight": w}) for t, w in zip((A, B, C), weights, strict=False)]


def names(targets: Any) -> list[str]:
    return [t.provider for t in targets]


# --- ordered --------------------------------------------------------------------------------


def test_ordered_hands_back_the_configured_list_itself() -> None:
    targets = [A, B, C]
    assert Balancer(SETTINGS).order("ordered", targets) is targets


# --- weighted -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("draws", "expected"),
    [
        # weights 3:1:0 -> the draw covers [0, 4): a below 3, b from 3; c (0) always last.
        ([0.0], ["a", "b", "c"]),
        ([0.74], ["a", "b", "c"]),
        ([0.75], ["b", "a", "c"]),
        ([0.99], ["b", "a", "c"]),
    ],
)
def test_weighted_draws_the_first_target_by_weight(draws: list[float], expected: list[str]) -> None:
    balancer = Balancer(SETTINGS, rng=ScriptedRandom(*draws, 0.0))
    assert names(balancer.order("weighted", weighted(3, 1, 0))) == expected


def test_weighted_draws_the_fallbacks_by_weight_too() -> None:
    # 1:1:2 -> first draw 0.6 * 4 = 2.4 picks c; then 0.5 * 2 = 1.0 picks b over a.
    balancer = Balancer(SETTINGS, rng=ScriptedRandom(0.6, 0.5, 0.0))
    assert names(balancer.order("weighted", weighted(1, 1, 2))) == ["c", "b", "a"]


def test_a_missing_weight_counts_as_one() -> None:
    balancer = Balancer(SETTINGS, rng=ScriptedRandom(0.49, 0.0))
    assert names(balancer.order("weighted", weighted(None, None))) == ["a", "b"]
    balancer = Balancer(SETTINGS, rng=ScriptedRandom(0.5, 0.0))
    assert names(balancer.order("weighted", weighted(None, None))) == ["b", "a"]


def test_weighted_first_choices_follow_the_weights_over_many_requests() -> None:
    balancer = Balancer(SETTINGS, rng=random.Random(7))  # seeded: the same draws every run
    firsts = Counter(balancer.order("weighted", weighted(3, 1))[0].provider for _ in range(4000))
    assert 0.72 < firsts["a"] / 4000 < 0.78


def test_weighted_with_every_positive_weight_gone_keeps_the_zero_weight_ones() -> None:
    # A model whose weighted targets are disabled (no key) keeps its fallbacks, in order.
    targets = weighted(0, 0)
    assert names(Balancer(SETTINGS).order("weighted", targets)) == ["a", "b"]


# --- least-latency --------------------------------------------------------------------------


def test_least_latency_orders_by_the_health_services_latency() -> None:
    health = Latencies(a=0.3, b=0.1, c=0.2)
    balancer = Balancer(SETTINGS, health=health)
    assert names(balancer.order("least-latency", [A, B, C])) == ["b", "c", "a"]
    assert health.asked[0] == ("a", 60)


def test_least_latency_uses_its_own_averages_when_health_lacks_a_target() -> None:
    clock = Clock()
    load = TargetLoad(SETTINGS, clock)
    balancer = Balancer(SETTINGS, load, health=Latencies(a=0.01, b=0.02))  # nothing for c
    for target, seconds in ((A, 0.5), (B, 0.2), (C, 0.1)):
        load.observe(target_key(target), seconds, ok=True)
    assert names(balancer.order("least-latency", [A, B, C])) == ["c", "b", "a"]


def test_least_latency_tries_an_unmeasured_target_first() -> None:
    load = TargetLoad(SETTINGS, Clock())
    balancer = Balancer(SETTINGS, load)
    assert names(balancer.order("least-latency", [A, B, C])) == ["a", "b", "c"]
    load.observe(target_key(A), 0.1, ok=True)
    assert names(balancer.order("least-latency", [A, B, C])) == ["b", "c", "a"]
    load.observe(target_key(B), 0.3, ok=True)
    load.observe(target_key(C), 0.2, ok=True)
    assert names(balancer.order("least-latency", [A, B, C])) == ["a", "c", "b"]


def test_the_average_moves_by_alpha_and_is_forgotten_when_old() -> None:
    clock = Clock()
    load = TargetLoad(SETTINGS, clock)
    key = target_key(A)
    load.observe(key, 1.0, ok=True)
    load.observe(key, 0.0, ok=True)
    assert load.latency_s(key) == pytest.approx(0.5)
    clock.now += 61
    assert load.latency_s(key) is None  # too old: measured again before it counts
    load.observe(key, 2.0, ok=True)
    assert load.latency_s(key) == pytest.approx(2.0)  # a fresh start, not a blend


def test_a_failure_never_makes_a_target_look_faster() -> None:
    load = TargetLoad(SETTINGS, Clock())
    key = target_key(A)
    load.observe(key, 1.0, ok=True)
    load.observe(key, 0.001, ok=False)  # refused at once
    assert load.latency_s(key) == pytest.approx(1.0)
    load.observe(key, 3.0, ok=False)  # timed out: slow indeed
    assert load.latency_s(key) == pytest.approx(2.0)


# --- least-busy -----------------------------------------------------------------------------


def test_least_busy_puts_the_fewest_calls_in_flight_first() -> None:
    load = TargetLoad(SETTINGS)
    balancer = Balancer(SETTINGS, load)
    assert names(balancer.order("least-busy", [A, B, C])) == ["a", "b", "c"]  # ties: as configured
    load.start(target_key(A))
    load.start(target_key(A))
    load.start(target_key(B))
    assert names(balancer.order("least-busy", [A, B, C])) == ["c", "b", "a"]
    load.end(target_key(A))
    load.end(target_key(A))
    assert names(balancer.order("least-busy", [A, B, C])) == ["a", "c", "b"]


# --- Failover keeps the load ---------------------------------------------------------------


async def no_sleep(seconds: float) -> None:
    return None


def failover(
    load: TargetLoad, **clients: FakeClient
) -> tuple[Failover, Callable[[str], Any], Balancer]:
    balancer = Balancer(SETTINGS, load)
    typed: dict[str, ProviderClient] = dict(clients)
    f = Failover(typed, FailoverSettings(retries_per_target=0), no_sleep, balancer=balancer)
    return f, load.in_flight, balancer


async def test_calls_are_in_flight_while_they_run_and_not_after() -> None:
    load = TargetLoad(SETTINGS)
    slow = FakeClient("a", delay_s=60)
    f, _, _ = failover(load, a=slow, b=FakeClient("b"))
    task = asyncio.create_task(f.run([A, B], {}, lambda c, b: c.chat(b), "least-busy"))
    await slow.called.wait()
    assert load.in_flight(target_key(A)) == 1
    # A second request goes to the idle target.
    assert (await f.run([A, B], {}, lambda c, b: c.chat(b), "least-busy"))[0] == "b"
    assert load.in_flight(target_key(B)) == 0
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert load.in_flight(target_key(A)) == 0  # a cancelled call is over too


async def test_a_failed_attempt_leaves_flight_and_counts_as_slow_at_best() -> None:
    load = TargetLoad(SETTINGS)
    down = ProviderCallError("down", status=503, retryable=True)
    f, _, _ = failover(load, a=FakeClient("a", [down]), b=FakeClient("b"))
    provider, _ = await f.run([A, B], {}, lambda c, b: c.chat(b), "least-latency")
    assert provider == "b"
    assert load.in_flight(target_key(A)) == load.in_flight(target_key(B)) == 0
    assert load.latency_s(target_key(A)) is not None
    assert load.latency_s(target_key(B)) is not None


async def test_a_held_stream_stays_in_flight_until_it_ends() -> None:
    load = TargetLoad(SETTINGS)
    f, _, _ = failover(load, a=FakeClient("a", [stream_events(["x", "y"])]))

    def hold(events: AsyncIterator[bytes], release: Callable[[], None]) -> AsyncIterator[bytes]:
        async def held() -> AsyncIterator[bytes]:
            try:
                async for event in events:
                    yield event
            finally:
                release()

        return held()

    _, events = await f.run([A], {}, lambda c, b: c.open_chat_stream(b), "least-busy", hold)
    assert load.in_flight(target_key(A)) == 1
    got = [e async for e in events]
    assert len(got) == 4
    assert load.in_flight(target_key(A)) == 0


async def test_every_routing_falls_back_past_an_unavailable_first_choice() -> None:
    class Gate:
        def admit(self, provider: str) -> bool:
            return provider != "b"

        def record(self, provider: str, error: ProviderCallError | None, seconds: float) -> None:
            return None

    balancer = Balancer(SETTINGS, rng=ScriptedRandom(0.99, 0.0))  # draws b first
    clients: dict[str, ProviderClient] = {"a": FakeClient("a"), "b": FakeClient("b")}
    f = Failover(clients, FailoverSettings(), no_sleep, health=Gate(), balancer=balancer)
    provider, _ = await f.run(weighted(1, 1), {}, lambda c, b: c.chat(b), "weighted")
    assert provider == "a"


def test_only_targets_of_measured_routings_are_counted() -> None:
    models = [
        ModelSettings(name="o", targets=[A, B]),
        ModelSettings(name="w", routing="weighted", targets=[A, C]),
        ModelSettings(name="l", routing="least-busy", targets=[B]),
    ]
    assert measured_targets(models) == {target_key(B)}


async def test_calls_to_unmeasured_targets_are_not_counted() -> None:
    load = TargetLoad(SETTINGS)
    balancer = Balancer(SETTINGS, load, measured={target_key(B)})
    fakes = {"a": FakeClient("a", delay_s=60), "b": FakeClient("b", delay_s=60)}
    clients: dict[str, ProviderClient] = dict(fakes)
    f = Failover(clients, FailoverSettings(), no_sleep, balancer=balancer)
    calls = [
        asyncio.create_task(f.run([t], {}, lambda c, b: c.chat(b), "least-busy")) for t in (A, B)
    ]
    await asyncio.gather(*(fake.called.wait() for fake in fakes.values()))
    assert (load.in_flight(target_key(A)), load.in_flight(target_key(B))) == (0, 1)
    for task in calls:
        task.cancel()
    await asyncio.gather(*calls, return_exceptions=True)
    assert load.in_flight(target_key(B)) == 0
