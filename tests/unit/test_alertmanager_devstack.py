"""`make up`'s monitoring components: built from the stack's config, skipped when not installed."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml

from llmproxy.devstack.monitoring import (
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
