"""docker-compose's monitoring services run the committed Prometheus, Alertmanager and Grafana
configuration, and Prometheus's compose config reaches every container by its name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from llmproxy.config import DEFAULT_CONFIG, load_config
from llmproxy.obsconf.__main__ import render
from llmproxy.obsconf.prometheus import (
    COMPOSE_CONFIG,
    COMPOSE_ENVIRON,
    build_prometheus_config,
    compose_options,
)

ROOT = Path(__file__).resolve().parents[2]
MONITORING = {"prometheus": 9090, "alertmanager": 9093, "grafana": 3000}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    return services


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> host path (relative to the repository) of each read-only volume."""
    found = {}
    for volume in service["volumes"]:
        host, container, mode = volume.split(":")
        assert mode == "ro", volume
        found[container] = host.removeprefix("./")
    return found


@pytest.mark.parametrize("name", sorted(MONITORING))
def test_monitoring_uis_are_published_on_loopback_only(compose: dict[str, Any], name: str) -> None:
    port = MONITORING[name]
    assert compose[name]["ports"] == [f"127.0.0.1:{port}:{port}"]


def test_prometheus_runs_the_committed_compose_config(compose: dict[str, Any]) -> None:
    prometheus = compose["prometheus"]
    assert mounts(prometheus) == {"/etc/prometheus": "deploy/prometheus"}
    assert "--config.file=/etc/prometheus/prometheus.compose.yml" in prometheus["command"]
    assert (ROOT / "deploy/prometheus" / COMPOSE_CONFIG.name).exists()


def test_the_compose_prometheus_config_is_fresh() -> None:
    """Regenerate with `.venv/bin/python -m llmproxy.obsconf`."""
    config = load_config(DEFAULT_CONFIG, environ=COMPOSE_ENVIRON)
    assert COMPOSE_CONFIG.read_text() == render(build_prometheus_config(config, compose_options()))


def test_prometheus_scrapes_the_containers_compose_runs(compose: dict[str, Any]) -> None:
    """Hosts are the compose services' names, as the containers' own environment says."""
    built = yaml.safe_load(COMPOSE_CONFIG.read_text())
    hosts = {
        target.split(":")[0]
        for job in built["scrape_configs"]
        for static in job["static_configs"]
        for target in static["targets"]
    }
    assert hosts <= set(compose)
    environment = compose["router"]["environment"]
    for name, value in COMPOSE_ENVIRON.items():
        if name != "LLMPROXY__ENVOY__HOST":
            assert environment[name] == value, name
    alertmanagers = built["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    assert alertmanagers == ["alertmanager:9093"]


def test_alertmanager_runs_the_committed_config_with_secrets_mounted(
    compose: dict[str, Any],
) -> None:
    volumes = mounts(compose["alertmanager"])
    assert volumes["/etc/alertmanager/alertmanager.yml"] == "deploy/alertmanager/alertmanager.yml"
    assert volumes["/etc/alertmanager/secrets"] == "deploy/alertmanager/secrets"
    assert "--config.file=/etc/alertmanager/alertmanager.yml" in compose["alertmanager"]["command"]


def test_grafana_is_provisioned_with_the_dashboards(compose: dict[str, Any]) -> None:
    assert mounts(compose["grafana"]) == {
        "/etc/grafana/provisioning": "deploy/grafana/provisioning",
        "/var/lib/grafana/dashboards": "deploy/grafana/dashboards",
    }
    datasources = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"]
    urls = {d["uid"]: d["url"] for d in datasources}
    assert urls == {
        "prometheus": "http://prometheus:9090",
        "alertmanager": "http://alertmanager:9093",
    }


def test_monitoring_starts_in_order(compose: dict[str, Any]) -> None:
    assert compose["grafana"]["depends_on"] == {"prometheus": {"condition": "service_healthy"}}
    assert compose["prometheus"]["depends_on"] == {"alertmanager": {"condition": "service_healthy"}}
