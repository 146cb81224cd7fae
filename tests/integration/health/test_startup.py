"""A provider whose startup probe fails is not enabled, says why, and ProbeNow enables it."""

from __future__ import annotations

import logging

import pytest

from llmproxy._gen.health.v1 import health_pb2
from tests.harness.fake_provider import fake_provider
from tests.harness.ports import free_port
from tests.integration.health.conftest import StartHealth


async def test_a_provider_down_at_startup_is_not_enabled_until_probe_now_passes(
    start_health: StartHealth, caplog: pytest.LogCaptureFixture
) -> None:
    async with fake_provider() as up, fake_provider() as later:
        later.knobs.outage = "503"
        with caplog.at_level(logging.WARNING, logger="llmproxy.health.monitor"):
            service = await start_health({"up": up.url, "later": later.url})
        messages = [r.getMessage() for r in caplog.records]
        assert any(
            m.startswith("provider later not enabled: its startup probe failed (HTTP 503: ")
            for m in messages
        ), messages
        status = await service.provider("later")
        assert (status.enabled, status.available) == (False, False)
        assert status.state == health_pb2.PROVIDER_STATE_UNHEALTHY
        assert status.reason.startswith("not enabled: startup probe failed: HTTP 503")
        assert await service.serving("llmproxy.health.provider.later") == "NOT_SERVING"
        assert (await service.provider("up")).enabled
        # Back up: still not enabled (no periodic probes while disabled) until asked.
        later.knobs.outage = "none"
        assert not (await service.provider("later")).enabled
        reply = await service.api.ProbeNow(health_pb2.ProbeNowRequest(name="later"))
        assert reply.result.ok
        assert (reply.provider.enabled, reply.provider.available) == (True, True)


async def test_an_unreachable_provider_is_reported_with_the_connection_error(
    start_health: StartHealth,
) -> None:
    service = await start_health({"gone": f"http://127.0.0.1:{free_port()}"})
    status = await service.provider("gone")
    assert status.reason == "not enabled: startup probe failed: no answer: ConnectError"
    assert status.probes[0].status_code == 0


async def test_advisory_startup_probe_keeps_the_provider_enabled(start_health: StartHealth) -> None:
    service = await start_health(
        {"gone": f"http://127.0.0.1:{free_port()}"}, {"probe": {"startup_required": False}}
    )
    status = await service.provider("gone")
    assert status.enabled
    assert status.state == health_pb2.PROVIDER_STATE_DEGRADED  # one failed probe so far
