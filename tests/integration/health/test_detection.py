"""With default settings, a provider that goes down is UNHEALTHY within 5 s and HEALTHY again
within 10 s of recovering, for each kind of outage of the fake provider."""

from __future__ import annotations

import pytest

from tests.harness.fake_provider import fake_provider
from tests.integration.health.conftest import StartHealth


@pytest.mark.parametrize("outage", ["503", "hang", "reset"])
async def test_outage_detected_within_5_s_and_recovery_within_10_s(
    start_health: StartHealth, outage: str
) -> None:
    async with fake_provider() as provider:
        service = await start_health({"p": provider.url})  # default settings
        await service.wait_for("p", "healthy", within_s=5)
        provider.knobs.outage = outage  # type: ignore[assignment]
        down_s = await service.wait_for("p", "unhealthy", within_s=5)
        assert await service.serving("llmproxy.health.provider.p") == "NOT_SERVING"
        provider.knobs.outage = "none"
        up_s = await service.wait_for("p", "healthy", within_s=10)
        assert await service.serving("llmproxy.health.provider.p") == "SERVING"
    print(f"outage={outage}: unhealthy after {down_s:.2f} s, healthy {up_s:.2f} s after recovery")
