"""Every RPC of llmproxy.health.v1 and the standard grpc.health.v1 on a real service, bad input
included."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf import duration_pb2
from grpc_health.v1 import health_pb2 as grpc_health_pb2

from llmproxy._gen.health.v1 import health_pb2
from llmproxy.health.components import NOT_CHECKED
from tests.harness.fake_provider import fake_provider
from tests.harness.waiting import eventually
from tests.integration.health.conftest import StartHealth

FAST = {
    "probe": {"interval_s": 0.2, "timeout_s": 0.5, "degraded_latency_s": 0.5},
    "sync_interval_s": 0.05,
    "components_interval_s": 0.2,
}


async def test_list_get_and_the_probe_results(start_health: StartHealth) -> None:
    async with fake_provider() as one, fake_provider() as two:
        service = await start_health({"one": one.url, "two": two.url}, FAST)
        reply = await service.api.ListProviders(health_pb2.ListProvidersRequest())
        assert [p.name for p in reply.providers] == ["one", "two"]
        provider = reply.providers[0]
        assert provider.state == health_pb2.PROVIDER_STATE_HEALTHY
        assert (provider.available, provider.enabled, provider.reason) == (
            True,
            True,
            "probes pass",
        )
        assert provider.circuit == health_pb2.CIRCUIT_STATE_CLOSED
        probe = provider.probes[0]
        assert (probe.ok, probe.status_code, probe.mode) == (True, 200, "models")
        assert probe.detail.endswith("models listed")
        assert probe.latency.ToNanoseconds() > 0
        assert probe.instance
        got = await service.provider("two")
        assert (got.name, got.base_url) == ("two", f"{two.url}/v1")


async def test_bad_input_gets_clear_errors(start_health: StartHealth) -> None:
    async with fake_provider() as one:
        service = await start_health({"one": one.url}, FAST)
        api = service.api
        calls = [
            (
                api.GetProvider(health_pb2.GetProviderRequest()),
                "INVALID_ARGUMENT",
                "name is required",
            ),
            (
                api.GetProvider(health_pb2.GetProviderRequest(name="nope")),
                "NOT_FOUND",
                "no provider named 'nope' is configured (known: one)",
            ),
            (api.ProbeNow(health_pb2.ProbeNowRequest(name="nope")), "NOT_FOUND", "'nope'"),
            (
                api.SetMaintenance(health_pb2.SetMaintenanceRequest(name="one", reason="x" * 300)),
                "INVALID_ARGUMENT",
                "reason: at most 256 characters, got 300",
            ),
            (
                api.SetMaintenance(health_pb2.SetMaintenanceRequest(name="nope", maintenance=True)),
                "NOT_FOUND",
                "'nope'",
            ),
            (
                service.reporter.ReportOutcomes(
                    health_pb2.ReportOutcomesRequest(
                        outcomes=[health_pb2.CallOutcome(provider="one", status_code=999)]
                    )
                ),
                "INVALID_ARGUMENT",
                "outcomes[0].status_code must be an HTTP status",
            ),
        ]
        for call, code, message in calls:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await call
            assert raised.value.code().name == code
            assert message in (raised.value.details() or "")
        watch = api.WatchProviders(health_pb2.WatchProvidersRequest(names=["one", "nope"]))
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await watch.read()
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND
        # Still serving after all that.
        assert (await service.provider("one")).name == "one"


async def test_watch_sends_the_snapshot_then_each_change(start_health: StartHealth) -> None:
    async with fake_provider() as one, fake_provider() as two:
        service = await start_health({"one": one.url, "two": two.url}, FAST)
        watch = service.api.WatchProviders(health_pb2.WatchProvidersRequest(names=["one"]))
        first = await watch.read()
        assert (first.initial, first.provider.name) == (True, "one")
        assert first.provider.state == health_pb2.PROVIDER_STATE_HEALTHY
        two.knobs.outage = "503"  # not watched: nothing arrives for it
        one.knobs.outage = "503"
        states = []
        async with asyncio.timeout(10):
            while not states or states[-1] != health_pb2.PROVIDER_STATE_UNHEALTHY:
                message = await watch.read()
                assert not message.initial
                assert message.provider.name == "one"
                states.append(message.provider.state)
        # Each message is a change: degraded at the first failed probe, unhealthy in the end.
        # Probes overlap (one starts every interval), so on a busy machine one that began
        # before the outage can end after a failed one and bring a healthy state in between.
        assert states[0] == health_pb2.PROVIDER_STATE_DEGRADED
        before = [health_pb2.PROVIDER_STATE_HEALTHY, *states[:-1]]
        assert all(old != new for old, new in zip(before, states, strict=True)), states
        watch.cancel()


async def test_probe_now_returns_a_fresh_result(start_health: StartHealth) -> None:
    async with fake_provider() as one:
        service = await start_health({"one": one.url}, {**FAST, "probe": {"interval_s": 3600}})
        one.knobs.outage = "503"
        reply = await service.api.ProbeNow(health_pb2.ProbeNowRequest(name="one"))
        assert (reply.result.ok, reply.result.status_code) == (False, 503)
        assert reply.result.detail.startswith("HTTP 503: ")
        assert reply.provider.state == health_pb2.PROVIDER_STATE_DEGRADED
        assert reply.provider.probes[0] == reply.result


async def test_maintenance_drains_for_every_api(start_health: StartHealth) -> None:
    async with fake_provider() as one:
        service = await start_health({"one": one.url}, FAST)
        health_name = "llmproxy.health.provider.one"
        assert await service.serving(health_name) == "SERVING"
        reply = await service.api.SetMaintenance(
            health_pb2.SetMaintenanceRequest(name="one", maintenance=True, reason="key rotation")
        )
        provider = reply.provider
        assert (provider.maintenance, provider.available) == (True, False)
        assert provider.maintenance_reason == "key rotation"
        assert provider.state == health_pb2.PROVIDER_STATE_HEALTHY  # drained, not broken
        await eventually(
            lambda: service.serving(health_name),
            lambda status: status == "NOT_SERVING",
            what=f"{health_name} NOT_SERVING",
            timeout_s=5,
        )
        reply = await service.api.SetMaintenance(health_pb2.SetMaintenanceRequest(name="one"))
        assert (reply.provider.maintenance, reply.provider.available) == (False, True)


async def test_reported_failures_open_the_circuit_and_stop_it_serving(
    start_health: StartHealth,
) -> None:
    async with fake_provider() as one:
        service = await start_health({"one": one.url}, FAST)
        watch = service.grpc_health.Watch(
            grpc_health_pb2.HealthCheckRequest(service="llmproxy.health.provider.one")
        )
        assert (await watch.read()).status == grpc_health_pb2.HealthCheckResponse.SERVING
        failed = health_pb2.CallOutcome(
            provider="one", ok=False, status_code=503, latency=duration_pb2.Duration(nanos=10**6)
        )
        reply = await service.reporter.ReportOutcomes(
            health_pb2.ReportOutcomesRequest(
                outcomes=[failed] * 5 + [health_pb2.CallOutcome(provider="ghost", ok=True)],
                reporter="pytest",
            )
        )
        assert (reply.accepted, list(reply.unknown_providers)) == (5, ["ghost"])
        provider = await service.provider("one")
        assert provider.circuit == health_pb2.CIRCUIT_STATE_OPEN
        assert (provider.state, provider.available) == (health_pb2.PROVIDER_STATE_UNHEALTHY, False)
        assert provider.reason == "circuit open: 5 failed calls in a row"
        assert provider.consecutive_failures == 5
        assert (await watch.read()).status == grpc_health_pb2.HealthCheckResponse.NOT_SERVING
        watch.cancel()


async def test_components_are_reported_like_providers(start_health: StartHealth) -> None:
    async with fake_provider() as one:
        service = await start_health({"one": one.url}, FAST)

        async def redis_component() -> health_pb2.Component:
            reply = await service.api.ListComponents(health_pb2.ListComponentsRequest())
            return {c.name: c for c in reply.components}["redis"]

        redis = await eventually(
            redis_component,
            lambda found: found.reason != NOT_CHECKED,
            what="a round of component checks",
        )
        assert (redis.healthy, redis.reason, redis.health_service) == (
            True,
            "ok",
            "llmproxy.health.redis",
        )
        assert await service.serving("llmproxy.health.redis") == "SERVING"
        assert await service.serving("") == "SERVING"


async def test_reads_never_wait_on_a_hanging_probe(start_health: StartHealth) -> None:
    async with fake_provider() as one:
        service = await start_health({"one": one.url}, {**FAST, "probe": {"timeout_s": 5}})
        one.knobs.outage = "hang"
        probing = asyncio.ensure_future(
            service.api.ProbeNow(health_pb2.ProbeNowRequest(name="one"))
        )
        await eventually(
            one.stats,
            lambda stats: stats["injected_errors"].get("outage_hang", 0) >= 1,
            what="the probe hanging in the provider",
        )
        listed = await service.api.ListProviders(health_pb2.ListProvidersRequest())
        got = await service.provider("one")
        checked = await service.serving("llmproxy.health.provider.one")
        assert not probing.done()  # every read above answered while the probe still hangs
        assert [p.name for p in listed.providers] == ["one"]
        assert (got.name, checked) == ("one", "SERVING")
        one.knobs.outage = "none"
        assert (await probing).result.ok
