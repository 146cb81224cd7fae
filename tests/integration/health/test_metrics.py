"""Prometheus metrics: provider state, probe latency, circuit transitions, component health."""

from __future__ import annotations

from prometheus_client import REGISTRY

from llmproxy._gen.health.v1 import health_pb2
from tests.harness.fake_provider import fake_provider
from tests.harness.waiting import eventually
from tests.integration.health.conftest import StartHealth

FAST = {
    "probe": {"interval_s": 0.2, "timeout_s": 0.5, "degraded_latency_s": 0.5},
    "components_interval_s": 0.1,
}


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_state_probes_circuits_and_components_are_measured(
    start_health: StartHealth,
) -> None:
    async with fake_provider() as provider:
        opened_before = sample(
            "llmproxy_health_circuit_transitions_total",
            provider="metered",
            from_state="closed",
            to_state="open",
        )
        probes_before = sample(
            "llmproxy_health_probe_seconds_count", provider="metered", result="ok"
        )
        service = await start_health({"metered": provider.url}, FAST)
        await eventually(
            lambda: sample("llmproxy_health_probe_seconds_count", provider="metered", result="ok"),
            lambda count: count >= probes_before + 2,
            what="two probes measured",
        )
        await eventually(
            lambda: sample("llmproxy_health_component_up", component="redis"),
            lambda up: up == 1,
            what="redis measured up",
        )
        assert sample("llmproxy_health_provider_state", provider="metered", state="healthy") == 1
        assert sample("llmproxy_health_provider_state", provider="metered", state="unhealthy") == 0
        assert sample("llmproxy_health_provider_available", provider="metered") == 1
        failed = health_pb2.CallOutcome(provider="metered", ok=False, status_code=500)
        await service.reporter.ReportOutcomes(
            health_pb2.ReportOutcomesRequest(outcomes=[failed] * 5)
        )
        assert (
            sample(
                "llmproxy_health_circuit_transitions_total",
                provider="metered",
                from_state="closed",
                to_state="open",
            )
            == opened_before + 1
        )
        assert sample("llmproxy_health_circuit_state", provider="metered", state="open") == 1
        assert sample("llmproxy_health_provider_available", provider="metered") == 0
        assert (
            sample("llmproxy_health_call_outcomes_total", provider="metered", result="failed") >= 5
        )
