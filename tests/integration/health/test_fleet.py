"""Several health instances on one Redis: one probe per interval for the fleet, shared state."""

from __future__ import annotations

import time

from llmproxy._gen.health.v1 import health_pb2
from tests.harness.fake_provider import fake_provider
from tests.harness.waiting import eventually
from tests.integration.health.conftest import StartHealth

INTERVAL_S = 0.25
SETTINGS = {
    "probe": {"interval_s": INTERVAL_S, "timeout_s": 0.5, "degraded_latency_s": 0.5},
    "sync_interval_s": 0.05,
}


async def test_three_instances_probe_once_per_interval(start_health: StartHealth) -> None:
    async with fake_provider() as provider:
        services = [await start_health({"p": provider.url}, SETTINGS) for _ in range(3)]
        before = await provider.requests("/v1/models")
        started = time.monotonic()
        probes = 12
        # Once per interval for the fleet, 12 probes take 12 intervals; uncoordinated, three
        # instances would make them in 4. A slow machine only makes them take longer.
        await eventually(
            lambda: provider.requests("/v1/models"),
            lambda count: count - before >= probes,
            what=f"{probes} probes",
            timeout_s=4 * probes * INTERVAL_S,
        )
        intervals = (time.monotonic() - started) / INTERVAL_S
        print(f"3 instances, {probes} probes in {intervals:.1f} intervals")
        assert intervals >= probes - 3
        # Each instance shows the fleet's probes, whichever instance ran them.
        runners = set()
        for service in services:
            provider_state = await service.provider("p")
            runners.update(p.instance for p in provider_state.probes)
            assert provider_state.state == health_pb2.PROVIDER_STATE_HEALTHY
        assert len(runners) >= 1


async def test_state_changes_reach_every_instance(start_health: StartHealth) -> None:
    async with fake_provider() as provider:
        first = await start_health({"p": provider.url}, SETTINGS)
        second = await start_health({"p": provider.url}, SETTINGS)
        await first.api.SetMaintenance(
            health_pb2.SetMaintenanceRequest(name="p", maintenance=True, reason="rotation")
        )

        await eventually(
            lambda: second.provider("p"),
            lambda found: found.maintenance,
            what="maintenance seen by the other instance",
            timeout_s=5,
        )
        assert (await second.provider("p")).maintenance_reason == "rotation"
        await first.api.SetMaintenance(health_pb2.SetMaintenanceRequest(name="p"))
        # A circuit opened by outcomes reported to one instance is open for the other.
        failed = health_pb2.CallOutcome(provider="p", ok=False, status_code=502)
        await first.reporter.ReportOutcomes(health_pb2.ReportOutcomesRequest(outcomes=[failed] * 5))

        await eventually(
            lambda: second.provider("p"),
            lambda found: found.circuit == health_pb2.CIRCUIT_STATE_OPEN,
            what="the open circuit seen by the other instance",
            timeout_s=5,
        )
        reported = await second.provider("p")
        assert (reported.available, reported.maintenance) == (False, False)
        # Probes one instance ran show up on the other.
        provider.knobs.outage = "503"
        await second.wait_for("p", "unhealthy", within_s=5)
        await first.wait_for("p", "unhealthy", within_s=5)
