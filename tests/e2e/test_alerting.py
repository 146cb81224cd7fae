"""Alerting end to end: the fake provider goes down, the page arrives; it comes back, so does
the resolved notification.

Real processes throughout: the stack (Redis, fake provider, services, Envoy), Prometheus
scraping it every second with the committed rules, Alertmanager with the committed routes, and
a local webhook server standing in for the pager and Slack.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TypeVar

import httpx
import pytest

from llmproxy.devstack.stack import Stack
from tests.harness import logs
from tests.harness.configs import stack_config_data, write_config
from tests.harness.observability import (
    PAGER_TOKEN,
    Monitoring,
    Notification,
    WebhookReceiver,
    monitoring_for,
    start_monitoring,
    webhook_receiver,
)
from tests.harness.waiting import eventually

T = TypeVar("T")

DETECT_WITHIN_S = 60.0


@dataclass(frozen=True)
class Watched:
    """A stack under Prometheus and Alertmanager, and the receiver of their notifications."""

    stack: Stack
    monitoring: Monitoring
    receiver: WebhookReceiver

    @property
    def fake_url(self) -> str:
        fake = self.stack.config.fake_provider
        return f"http://{fake.host}:{fake.port}"


@pytest.fixture(scope="module")
def watched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Watched]:
    workdir = tmp_path_factory.mktemp("alerting")
    path, config = write_config(workdir, stack_config_data())
    stack = Stack(config, path, workdir / "stack", os.environ)
    with webhook_receiver() as receiver:
        asyncio.run(stack.start())
        try:
            monitoring = monitoring_for(config, workdir / "monitoring", receiver.url)
            try:
                asyncio.run(start_monitoring(monitoring))
                yield Watched(stack, monitoring, receiver)
            finally:
                monitoring.prometheus.stop()
                monitoring.alertmanager.stop()
        finally:
            stack.stop()


@pytest.fixture
def alerting(request: pytest.FixtureRequest, watched: Watched) -> Watched:
    logs.watch(
        request.node,
        *watched.stack.processes.values(),
        watched.monitoring.prometheus,
        watched.monitoring.alertmanager,
    )
    return watched


def _alerts(notification: Notification, status: str, name: str) -> list[dict[str, object]]:
    alerts = notification.body.get("alerts", [])
    assert isinstance(alerts, list)
    return [
        a
        for a in alerts
        if a.get("status") == status and a.get("labels", {}).get("alertname") == name
    ]


def _pages(receiver: WebhookReceiver, status: str) -> list[Notification]:
    return [n for n in receiver.received("/pager") if _alerts(n, status, "ProviderDown")]


async def _set_outage(watched: Watched, outage: str) -> None:
    async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
        reply = await client.put(f"{watched.fake_url}/_fake/knobs", json={"outage": outage})
        reply.raise_for_status()


async def _prometheus_targets_up(watched: Watched) -> list[str]:
    async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
        reply = await client.get(f"{watched.monitoring.prometheus_url}/api/v1/targets")
    return [
        t["labels"]["job"] for t in reply.json()["data"]["activeTargets"] if t["health"] == "up"
    ]


async def test_a_provider_outage_pages_and_its_end_resolves(alerting: Watched) -> None:
    receiver = alerting.receiver
    # Prometheus scrapes every part of the stack (so a quiet pager means something).
    jobs = await eventually(
        lambda: _prometheus_targets_up(alerting),
        lambda up: {"router", "ratelimit", "authz", "health", "fault", "envoy"} <= set(up),
        what="every target scraped",
        timeout_s=15,
    )
    assert "envoy" in jobs
    assert _pages(receiver, "firing") == []

    await _set_outage(alerting, "503")
    broke = time.monotonic()
    try:
        pages = await eventually(
            lambda: _pages(receiver, "firing"), what="a page", timeout_s=DETECT_WITHIN_S
        )
    finally:
        await _set_outage(alerting, "none")
    restored = time.monotonic()
    detected_s = pages[0].received - broke
    print(f"\nProviderDown: time to detect {detected_s:.1f} s (outage to pager webhook)")

    page = pages[0]
    (alert,) = _alerts(page, "firing", "ProviderDown")
    assert alert["labels"] == {
        "alertname": "ProviderDown",
        "provider": "demo",
        "severity": "critical",
        "stack": "llmproxy",
    }
    assert page.body["receiver"] == "pager"
    assert page.headers["authorization"] == f"Bearer {PAGER_TOKEN}"
    assert alert["annotations"]["runbook_url"] == "deploy/RUNBOOK.md#providerdown"  # type: ignore[index]
    # Critical goes to Slack as well (the route continues).
    slack = await eventually(
        lambda: receiver.received("/slack"),
        lambda posts: any("[CRITICAL] ProviderDown" in str(p.body) for p in posts),
        what="the Slack post",
        timeout_s=10,
    )
    assert slack

    resolved = await eventually(
        lambda: _pages(receiver, "resolved"), what="the resolved page", timeout_s=DETECT_WITHIN_S
    )
    print(f"ProviderDown: resolved {resolved[0].received - restored:.1f} s after the outage ended")
    assert resolved[0].body["status"] == "resolved"
