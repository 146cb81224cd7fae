"""The monitor over the in-memory store: startup gate, probes, outcomes, maintenance, fallback."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence

import pytest

from llmproxy.common.settings import ProviderSettings
from llmproxy.health.errors import StoreUnavailableError, UnknownProviderError
from llmproxy.health.fallback import FallbackHealthStore
from llmproxy.health.memory_store import MemoryHealthStore
from llmproxy.health.monitor import Monitor
from llmproxy.health.records import Outcome
from llmproxy.health.registry import Registry
from llmproxy.health.settings import HealthSettings
from llmproxy.health.store import Loaded
from tests.harness.waiting import eventually
from tests.unit.health.fakes import BrokenStore, ScriptedProber

PROVIDERS = [
    ProviderSettings(name="a", base_url="http://127.0.0.1:1/v1"),
    ProviderSettings(name="b", base_url="http://127.0.0.1:2/v1"),
]
FAST = HealthSettings.model_validate(
    {
        "probe": {"interval_s": 0.1, "timeout_s": 0.1, "degraded_latency_s": 0.1},
        "sync_interval_s": 0.05,
        "circuit": {"consecutive_failures": 3, "open_s": 60},
    }
)


class CountingStore(MemoryHealthStore):
    """The memory store, counting the monitor's syncs (each one loads the shared state)."""

    loads = 0

    async def load(self, providers: Sequence[str], now: float) -> Loaded:
        self.loads += 1
        return await super().load(providers, now)


class Running:
    def __init__(self, settings: HealthSettings = FAST) -> None:
        self.registry = Registry(PROVIDERS)
        self.prober = ScriptedProber()
        self.store = CountingStore(settings.circuit)
        self.monitor = Monitor(self.registry, self.store, self.prober, settings, instance="t")

    async def until(self, name: str, state: str) -> None:
        await eventually(
            lambda: self.registry.status(name).state,
            lambda found: found == state,
            what=f"{name} {state}",
            timeout_s=5,
        )

    async def until_probed(self, name: str, times: int) -> None:
        """Wait until name has been probed `times` more times: that many intervals passed."""
        target = self.prober.calls.count(name) + times
        await eventually(
            lambda: self.prober.calls.count(name),
            lambda count: count >= target,
            what=f"{times} more probes of {name}",
            timeout_s=5,
        )


@pytest.fixture
async def running() -> AsyncIterator[Running]:
    found = Running()
    yield found
    await found.monitor.aclose()


async def test_startup_probes_every_provider_once_before_serving(running: Running) -> None:
    await running.monitor.start()
    assert sorted(running.prober.calls) == ["a", "b"]
    assert [s.state for s in running.registry.statuses()] == ["healthy", "healthy"]


async def test_a_failed_startup_probe_disables_the_provider_with_a_log_line(
    running: Running, caplog: pytest.LogCaptureFixture
) -> None:
    running.prober.up["b"] = False
    with caplog.at_level(logging.WARNING):
        await running.monitor.start()
    status = running.registry.status("b")
    assert (status.enabled, status.available, status.state) == (False, False, "unhealthy")
    assert status.reason == "not enabled: startup probe failed: HTTP 503: down"
    assert any(
        "provider b not enabled: its startup probe failed (HTTP 503: down)" in r.getMessage()
        for r in caplog.records
    )
    # Not probed on while disabled ...
    calls = running.prober.calls.count("b")
    await running.until_probed("a", 3)  # three intervals, on the same schedule as b's
    assert running.prober.calls.count("b") == calls
    # ... until ProbeNow passes.
    running.prober.up["b"] = True
    result, status = await running.monitor.probe_now("b")
    assert result.ok
    assert (status.enabled, status.available) == (True, True)


async def test_startup_probe_can_be_advisory(caplog: pytest.LogCaptureFixture) -> None:
    settings = FAST.model_copy(
        update={"probe": FAST.probe.model_copy(update={"startup_required": False})}
    )
    found = Running(settings)
    found.prober.up["a"] = False
    try:
        with caplog.at_level(logging.WARNING):
            await found.monitor.start()
        assert found.registry.status("a").enabled
        assert any("enabled anyway" in r.getMessage() for r in caplog.records)
    finally:
        await found.monitor.aclose()


async def test_probes_run_on_their_interval_and_track_the_provider(running: Running) -> None:
    await running.monitor.start()
    running.prober.up["a"] = False
    await running.until("a", "unhealthy")
    running.prober.up["a"] = True
    await running.until("a", "healthy")
    assert running.prober.calls.count("a") >= 5


async def test_reported_failures_open_the_circuit(running: Running) -> None:
    await running.monitor.start()
    await running.monitor.report({"a": [Outcome(ok=False, status=503)] * 3})
    status = running.registry.status("a")
    assert (status.circuit, status.state, status.available) == ("open", "unhealthy", False)
    assert status.reason == "circuit open: 3 failed calls in a row"
    assert running.registry.status("b").available


async def test_maintenance_drains_and_restores(running: Running) -> None:
    await running.monitor.start()
    status = await running.monitor.set_maintenance("a", True, "key rotation")
    assert (status.maintenance, status.available, status.state) == (True, False, "healthy")
    loads = running.store.loads
    await eventually(  # syncs in between keep it
        lambda: running.store.loads, lambda count: count >= loads + 2, what="two syncs"
    )
    assert running.registry.status("a").maintenance
    status = await running.monitor.set_maintenance("a", False, "")
    assert (status.maintenance, status.available) == (False, True)


async def test_unknown_provider_names_are_refused(running: Running) -> None:
    await running.monitor.start()
    with pytest.raises(UnknownProviderError, match="no provider named 'zz' is configured"):
        await running.monitor.probe_now("zz")
    with pytest.raises(UnknownProviderError):
        await running.monitor.set_maintenance("zz", True, "")


async def test_probe_now_joins_a_probe_already_running(running: Running) -> None:
    await running.monitor.start()
    before = len(running.prober.calls)
    results = await asyncio.gather(*(running.monitor.probe_now("a") for _ in range(5)))
    assert all(r.ok for r, _ in results)
    assert len(running.prober.calls) - before <= 3  # one ProbeNow, maybe a scheduled probe


async def test_with_redis_down_health_carries_on_locally() -> None:
    broken = BrokenStore()
    changes: list[bool] = []
    store = FallbackHealthStore(
        broken, MemoryHealthStore(FAST.circuit), retry_s=0.05, on_change=changes.append
    )
    registry = Registry(PROVIDERS)
    prober = ScriptedProber()
    monitor = Monitor(registry, store, prober, FAST, instance="t")
    try:
        await monitor.start()
        assert changes == [True]
        assert store.degraded
        prober.up["a"] = False
        await eventually(lambda: registry.status("a").state == "unhealthy", what="a unhealthy")
        with pytest.raises(StoreUnavailableError, match="maintenance must reach every health"):
            await monitor.set_maintenance("a", True, "x")
        broken.broken = False
        await eventually(lambda: not store.degraded, what="redis back")
        assert changes == [True, False]
    finally:
        await monitor.aclose()
