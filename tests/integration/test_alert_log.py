"""`make up` in demo mode: an alert Alertmanager routes to the pager lands in alerts.log.

Real prometheus-alertmanager with the configuration `make up` writes, and the local receiver
process; the alert is posted to Alertmanager's API as Prometheus would post it.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from llmproxy.devstack.monitoring import monitoring_processes, monitoring_urls
from tests.harness import logs
from tests.harness.configs import stack_config_data, write_config
from tests.harness.waiting import eventually

ALERT = {
    "labels": {"alertname": "ProviderDown", "provider": "demo", "severity": "critical"},
    "annotations": {"summary": "Provider demo is down (health probes fail)"},
}


async def test_a_critical_alert_is_paged_into_the_alert_log(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    _, config = write_config(tmp_path, stack_config_data())
    receiver, alertmanager, _prometheus = monitoring_processes(config, tmp_path, alert_log=True)
    logs.watch(request.node, receiver, alertmanager)
    url = monitoring_urls([alertmanager])["alertmanager"]
    try:
        for process in (receiver, alertmanager):
            process.start()
            await process.wait_ready(30)
        async with httpx.AsyncClient(trust_env=False, timeout=5) as client:
            posted = await client.post(f"{url}/api/v2/alerts", json=[ALERT])
        assert posted.status_code == 200, posted.text

        async def alert_log() -> str:
            return receiver.log_path.read_text()

        # Critical alerts wait 10 s (group_wait) before the page goes out.
        text = await eventually(alert_log, lambda t: "pager firing" in t, timeout_s=40)
    finally:
        alertmanager.stop()
        receiver.stop()
    assert (
        "pager firing ProviderDown provider=demo severity=critical: "
        "Provider demo is down (health probes fail)"
    ) in text
