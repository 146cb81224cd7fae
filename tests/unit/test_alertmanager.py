"""Alertmanager's routing, checked by the real amtool: severities reach the right receivers."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.test_alert_rules import alert_rules

AMTOOL = shutil.which("amtool") or "/usr/bin/amtool"
CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "alertmanager" / "alertmanager.yml"


def amtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [AMTOOL, *map(str, args)], capture_output=True, text=True, check=False, timeout=60
    )


def receivers_for(*labels: str, config: Path = CONFIG) -> str:
    done = amtool("config", "routes", "test", "--config.file", config, *labels)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.strip()


def loaded() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(CONFIG.read_text())
    return config


def test_amtool_accepts_the_config() -> None:
    done = amtool("check-config", CONFIG)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_amtool_rejects_a_route_to_an_unknown_receiver(tmp_path: Path) -> None:
    config = loaded()
    config["route"]["routes"][0]["receiver"] = "nobody"
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config))
    done = amtool("check-config", path)
    assert done.returncode != 0
    assert "nobody" in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("labels", "receivers"),
    [
        (["severity=critical", "alertname=ProviderDown", "provider=openai"], "pager,slack"),
        (["severity=critical", "alertname=ServiceDown", "service=router"], "pager,slack"),
        (["severity=warning", "alertname=ProviderHighLatency"], "slack"),
        (["severity=info", "alertname=CacheHitRatioLow"], "null"),
        # An alert someone adds without a severity still reaches people.
        (["alertname=Unlabelled"], "slack"),
    ],
)
def test_severities_route_to_their_receivers(labels: list[str], receivers: str) -> None:
    assert receivers_for(*labels) == receivers


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: str(r["alert"]))
def test_every_alert_rule_reaches_its_severitys_receivers(rule: dict[str, Any]) -> None:
    expected = {"critical": "pager,slack", "warning": "slack", "info": "null"}
    labels = [f"alertname={rule['alert']}", *(f"{k}={v}" for k, v in rule["labels"].items())]
    assert receivers_for(*labels) == expected[rule["labels"]["severity"]]


def test_pages_are_grouped_by_provider_and_sent_fast() -> None:
    route = loaded()["route"]
    assert {"alertname", "provider", "service"} <= set(route["group_by"])
    (critical,) = [r for r in route["routes"] if r["matchers"] == ['severity="critical"']]
    assert critical["continue"] is True
    assert critical["group_wait"] == "10s"


def test_provider_down_inhibits_that_providers_latency_alert() -> None:
    rules = loaded()["inhibit_rules"]
    assert {
        "source_matchers": ['alertname="ProviderDown"'],
        "target_matchers": ['alertname="ProviderHighLatency"'],
        "equal": ["provider"],
    } in rules


def test_inhibitions_name_real_alerts() -> None:
    names = {r["alert"] for r in alert_rules()}
    for rule in loaded()["inhibit_rules"]:
        for matcher in rule["source_matchers"] + rule["target_matchers"]:
            if matcher.startswith('alertname="'):
                assert matcher.removeprefix('alertname="').rstrip('"') in names


def test_no_secret_is_in_the_file() -> None:
    receivers = {r["name"]: r for r in loaded()["receivers"]}
    slack = receivers["slack"]["slack_configs"][0]
    assert "api_url" not in slack
    assert slack["api_url_file"].startswith("/etc/alertmanager/secrets/")
    pager = receivers["pager"]["webhook_configs"][0]
    assert pager["http_config"]["authorization"]["credentials_file"].startswith(
        "/etc/alertmanager/secrets/"
    )
