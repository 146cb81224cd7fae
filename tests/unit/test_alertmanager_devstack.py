"""`make up`'s monitoring components: built from the stack's config, skipped when not installed."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml

from llmproxy.devstack.monitoring import (
    ALERTMANAGER_CONFIG,
    monitoring_processes,
    monitoring_urls,
    port_or_free,
)
from tests.harness.configs import stack_config_data, write_config


def test_nothing_is_added_when_prometheus_is_not_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("shutil.which", lambda name: None)
    _, config = write_config(tmp_path, stack_config_data())
    assert monitoring_processes(config, tmp_path) == []


def test_a_test_stack_gets_free_ports_and_its_own_scrape_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("shutil.which", lambda name: f"/usr/bin/{name}")
    _, config = write_config(tmp_path, stack_config_data())
    alertmanager, prometheus = monitoring_processes(config, tmp_path)
    urls = monitoring_urls([alertmanager, prometheus])
    assert set(urls) == {"alertmanager", "prometheus"}
    assert not urls["prometheus"].endswith(":9090")
    assert "--cluster.listen-address=" in alertmanager.argv
    scraped = yaml.safe_load((tmp_path / "prometheus" / "prometheus.yml").read_text())
    targets = {
        job["job_name"]: job["static_configs"][0]["targets"] for job in scraped["scrape_configs"]
    }
    assert targets["router"] == [f"127.0.0.1:{config.services.router.metrics_port}"]
    alertmanager_port = urls["alertmanager"].rsplit(":", 1)[1]
    assert scraped["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == [
        f"127.0.0.1:{alertmanager_port}"
    ]
    assert all(Path(rule).is_absolute() for rule in scraped["rule_files"])


def test_a_taken_port_is_replaced_by_a_free_one() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert port_or_free(port) != port


def test_demo_mode_delivers_every_receiver_to_the_local_alert_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("shutil.which", lambda name: f"/usr/bin/{name}")
    _, config = write_config(tmp_path, stack_config_data())
    receiver, alertmanager, _ = monitoring_processes(config, tmp_path, alert_log=True)
    assert receiver.name == "alerts"
    assert receiver.log_path == tmp_path / "logs" / "alerts.log"
    port = receiver.argv[receiver.argv.index("--port") + 1]
    config_file = tmp_path / "alertmanager" / "alertmanager.yml"
    assert f"--config.file={config_file}" in alertmanager.argv
    routed = yaml.safe_load(config_file.read_text())
    committed = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    assert routed["route"] == committed["route"]
    assert routed["inhibit_rules"] == committed["inhibit_rules"]
    (pager,) = [r for r in routed["receivers"] if r["name"] == "pager"]
    assert pager["webhook_configs"][0]["url"] == f"http://127.0.0.1:{port}/pager"
    (slack,) = [r for r in routed["receivers"] if r["name"] == "slack"]
    slack_url = Path(slack["slack_configs"][0]["api_url_file"])
    assert slack_url.read_text() == f"http://127.0.0.1:{port}/slack"
    assert slack_url.is_relative_to(tmp_path)


def test_live_mode_keeps_the_committed_routes_and_receivers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("shutil.which", lambda name: f"/usr/bin/{name}")
    _, config = write_config(tmp_path, stack_config_data())
    alertmanager, _ = monitoring_processes(config, tmp_path)
    assert f"--config.file={ALERTMANAGER_CONFIG}" in alertmanager.argv
