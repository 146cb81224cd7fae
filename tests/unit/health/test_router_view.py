"""The router's side: the health view's verdicts, its outcome queue, and Failover using it."""

from __future__ import annotations

from typing import Any

import pytest

from llmproxy._gen.health.v1 import health_pb2
from llmproxy.common.settings import HealthClientSettings
from llmproxy.common.timestamps import duration, timestamp
from llmproxy.router.calls import Failover
from llmproxy.router.errors import ProviderError
from llmproxy.router.health_view import HealthView, call_ok
from llmproxy.router.providers import ProviderCallError, ProviderClient
from llmproxy.router.providers.base import UnsupportedError
from llmproxy.router.settings import FailoverSettings, ModelTarget
from tests.unit.router.fakes import FakeClient, answer


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def provider(name: str, **fields: Any) -> health_pb2.Provider:
    defaults: dict[str, Any] = {
        "state": health_pb2.PROVIDER_STATE_HEALTHY,
        "available": True,
        "circuit": health_pb2.CIRCUIT_STATE_CLOSED,
        "enabled": True,
    }
    return health_pb2.Provider(name=name, **{**defaults, **fields})


def connected_view(clock: Clock | None = None, **settings: Any) -> HealthView:
    view = HealthView(
        "127.0.0.1:1", HealthClientSettings(**settings), clock or Clock(), service_token="t" * 32
    )
    view._set_connected(True)  # what the watch stream does on its first message
    return view


def test_unknown_providers_are_available() -> None:
    assert connected_view().admit("anything")


@pytest.mark.parametrize(
    "fields",
    [
        {"state": health_pb2.PROVIDER_STATE_UNHEALTHY, "available": False},
        {"circuit": health_pb2.CIRCUIT_STATE_OPEN, "available": False},
        {"maintenance": True, "available": False},
        {"enabled": False, "available": False},
    ],
)
def test_unavailable_states_are_skipped(fields: dict[str, Any]) -> None:
    view = connected_view()
    view.apply(provider("a", **fields))
    assert not view.admit("a")


def test_degraded_and_not_yet_probed_providers_get_calls() -> None:
    view = connected_view()
    view.apply(provider("a", state=health_pb2.PROVIDER_STATE_DEGRADED))
    view.apply(provider("b", state=health_pb2.PROVIDER_STATE_UNSPECIFIED))
    assert view.admit("a")
    assert view.admit("b")


def test_half_open_admits_only_its_trial_calls_until_the_next_state() -> None:
    view = connected_view()
    half_open = provider("a", circuit=health_pb2.CIRCUIT_STATE_HALF_OPEN, trial_calls=2)
    view.apply(half_open)
    assert view.available("a")
    assert [view.admit("a") for _ in range(3)] == [True, True, False]
    view.apply(half_open)  # the same episode goes on: no new trials
    assert not view.admit("a")
    view.apply(provider("a"))  # closed again
    assert all(view.admit("a") for _ in range(5))


def test_last_known_state_is_trusted_for_a_while_then_everything_is_available() -> None:
    clock = Clock()
    view = connected_view(clock, stale_after_s=30)
    view.apply(provider("a", state=health_pb2.PROVIDER_STATE_UNHEALTHY, available=False))
    view._set_connected(False)  # the health service went away
    clock.now = 29.0
    assert not view.admit("a")
    clock.now = 31.0
    assert view.admit("a")


def test_never_connected_means_everything_is_available() -> None:
    view = HealthView("127.0.0.1:1", HealthClientSettings(), service_token="t" * 32)
    view.apply(provider("a", state=health_pb2.PROVIDER_STATE_UNHEALTHY, available=False))
    assert view.admit("a")


@pytest.mark.parametrize(
    ("error", "ok"),
    [
        (None, True),
        (ProviderCallError("bad request", status=400, retryable=False), True),
        (ProviderCallError("throttled", status=429, retryable=True), True),
        (UnsupportedError("no embeddings"), True),
        (ProviderCallError("down", status=503, retryable=True), False),
        (ProviderCallError("timeout", status=504, retryable=True), False),
        (ProviderCallError("slow", status=408, retryable=True), False),
    ],
)
def test_what_counts_against_a_provider(error: ProviderCallError | None, ok: bool) -> None:
    assert call_ok(error) is ok


def test_outcomes_queue_is_bounded_and_drops_the_oldest() -> None:
    view = connected_view(max_pending=3)
    for status in (500, 501, 502, 503):
        view.record("a", ProviderCallError("x", status=status, retryable=True), 0.5)
    queued = list(view._pending)
    assert [o.status_code for o in queued] == [501, 502, 503]
    assert all(not o.ok and o.provider == "a" for o in queued)
    assert queued[0].latency.ToNanoseconds() == 500_000_000


class RecordingGate:
    """A CallGate that says no to some providers and records every outcome."""

    def __init__(self, unavailable: set[str]) -> None:
        self.unavailable = unavailable
        self.outcomes: list[tuple[str, bool, int]] = []

    def admit(self, provider: str) -> bool:
        return provider not in self.unavailable

    def record(self, provider: str, error: ProviderCallError | None, seconds: float) -> None:
        assert seconds >= 0
        self.outcomes.append((provider, error is None, 200 if error is None else error.status))


TARGETS = [ModelTarget(provider="primary", model="m1"), ModelTarget(provider="backup", model="m2")]


async def no_sleep(seconds: float) -> None:
    return None


def failover(
    gate: RecordingGate | None, primary: list[Any], backup: list[Any] | None = None
) -> tuple[Failover, FakeClient, FakeClient]:
    clients = {"primary": FakeClient("primary", primary), "backup": FakeClient("backup", backup)}
    typed: dict[str, ProviderClient] = dict(clients)
    return (
        Failover(typed, FailoverSettings(retries_per_target=1), no_sleep, health=gate),
        clients["primary"],
        clients["backup"],
    )


async def chat(f: Failover) -> tuple[str, Any]:
    return await f.run(TARGETS, {"messages": []}, lambda c, b: c.chat(b))


async def test_an_unavailable_target_is_skipped_without_a_call() -> None:
    gate = RecordingGate({"primary"})
    f, primary, backup = failover(gate, [answer("from primary")])
    provider_name, _ = await chat(f)
    assert provider_name == "backup"
    assert not primary.calls
    assert len(backup.calls) == 1
    assert gate.outcomes == [("backup", True, 200)]


async def test_when_every_target_is_unavailable_all_are_tried_in_order() -> None:
    down = ProviderCallError("down", status=503, retryable=True)
    gate = RecordingGate({"primary", "backup"})
    f, primary, _ = failover(gate, [down, down], [answer("backup answers")])
    provider_name, _ = await chat(f)
    assert provider_name == "backup"
    assert len(primary.calls) == 2  # retried as without a gate
    assert gate.outcomes == [
        ("primary", False, 503),
        ("primary", False, 503),
        ("backup", True, 200),
    ]


async def test_every_attempt_is_reported_and_errors_unchanged() -> None:
    down = ProviderCallError("down", status=502, retryable=True)
    gate = RecordingGate(set())
    f, _, _ = failover(gate, [down, down], [down, down])
    with pytest.raises(ProviderError) as raised:
        await chat(f)
    assert raised.value.status == 502
    assert gate.outcomes == [("primary", False, 502)] * 2 + [("backup", False, 502)] * 2


async def test_without_a_gate_failover_is_unchanged() -> None:
    f, primary, backup = failover(None, [ProviderCallError("x", status=500, retryable=True)] * 2)
    assert (await chat(f))[0] == "backup"
    assert len(primary.calls) == 2
    assert len(backup.calls) == 1


async def test_the_real_view_skips_an_unhealthy_provider_in_failover() -> None:
    view = connected_view()
    view.apply(provider("primary", state=health_pb2.PROVIDER_STATE_UNHEALTHY, available=False))
    clients = {"primary": FakeClient("primary"), "backup": FakeClient("backup")}
    typed: dict[str, ProviderClient] = dict(clients)
    f = Failover(typed, FailoverSettings(), no_sleep, health=view)
    assert (await chat(f))[0] == "backup"
    assert not clients["primary"].calls
    assert [(o.provider, o.ok) for o in view._pending] == [("backup", True)]


def probe(ok: bool, at: float, latency_s: float) -> health_pb2.ProbeResult:
    return health_pb2.ProbeResult(
        ok=ok, probe_time=timestamp(at), latency=duration(latency_s), mode="models"
    )


def test_latency_is_the_average_of_recent_passing_probes() -> None:
    wall = Clock()
    wall.now = 10_000.0
    view = HealthView(
        "127.0.0.1:1", HealthClientSettings(), Clock(), service_token="t" * 32, wall_clock=wall
    )
    view._set_connected(True)
    probes = [probe(True, 9_990, 0.2), probe(False, 9_980, 5.0), probe(True, 9_970, 0.4)]
    view.apply(provider("a", probes=probes))
    assert view.latency_s("a", 60) == pytest.approx(0.3)
    assert view.latency_s("a", 25) == pytest.approx(0.2)  # the older one is out
    wall.now = 20_000.0
    assert view.latency_s("a", 60) is None  # nothing recent: the router's own averages count
    assert view.latency_s("unknown", 60) is None


def test_latency_is_not_used_once_the_health_service_is_gone_too_long() -> None:
    clock, wall = Clock(), Clock()
    wall.now = 100.0
    view = HealthView(
        "127.0.0.1:1",
        HealthClientSettings(stale_after_s=30),
        clock,
        service_token="t" * 32,
        wall_clock=wall,
    )
    view._set_connected(True)
    view.apply(provider("a", probes=[probe(True, 100, 0.2)]))
    view._set_connected(False)
    clock.now = 31.0
    assert view.latency_s("a", 3600) is None
