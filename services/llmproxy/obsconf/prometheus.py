"""Prometheus's scrape configuration for one stack, as a pure function of its configuration.

The committed deploy/prometheus/prometheus.yml and the configs the tests start Prometheus with
come from this one function, so their scrape targets cannot drift from the ports the services
really listen on. The fake provider has no /metrics: its behaviour shows in Envoy's
`provider_demo` cluster stats and in the health service's probe metrics.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmproxy.common.contract import SERVICES
from llmproxy.config import StackConfig

REPO_ROOT = Path(__file__).resolve().parents[3]
PROMETHEUS_DIR = REPO_ROOT / "deploy" / "prometheus"
RULES_DIR = PROMETHEUS_DIR / "rules"
COMMITTED_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
COMPOSE_CONFIG = PROMETHEUS_DIR / "prometheus.compose.yml"
# In docker-compose.yml every container is reached by its service name (x-llmproxy-env there).
COMPOSE_ENVIRON = {
    **{f"LLMPROXY__SERVICES__{name.upper()}__HOST": name for name in SERVICES},
    "LLMPROXY__ENVOY__HOST": "envoy",
}


@dataclass(frozen=True)
class PrometheusOptions:
    """What differs between the shipped config and a test's: timing and where things are."""

    scrape_interval_s: float = 15.0
    evaluation_interval_s: float = 15.0
    # Relative paths are relative to the config file, as Prometheus reads them.
    rule_files: Sequence[str] = ("rules/*.yml",)
    alertmanagers: Sequence[str] = ("127.0.0.1:9093",)


def compose_options() -> PrometheusOptions:
    """The compose file's Prometheus: the same timing, Alertmanager by its service name."""
    return PrometheusOptions(alertmanagers=("alertmanager:9093",))


def _duration(seconds: float) -> str:
    millis = round(seconds * 1000)
    if millis <= 0:
        raise ValueError(f"an interval must be positive, not {seconds}s")
    return f"{millis // 1000}s" if millis % 1000 == 0 else f"{millis}ms"


def service_targets(config: StackConfig) -> dict[str, list[str]]:
    """Each service's metrics endpoints (host:port), every instance included."""
    return {
        name: [f"{s.host}:{s.metrics_port}" for s in getattr(config.services, name).all_instances()]
        for name in SERVICES
    }


def build_prometheus_config(
    config: StackConfig, options: PrometheusOptions | None = None
) -> dict[str, Any]:
    """prometheus.yml for config's stack: one job per service (label `service`) plus Envoy."""
    options = options or PrometheusOptions()
    interval = _duration(options.scrape_interval_s)
    jobs: list[dict[str, Any]] = [
        {
            "job_name": name,
            "static_configs": [{"targets": targets, "labels": {"service": name}}],
        }
        for name, targets in service_targets(config).items()
    ]
    envoy = config.envoy
    jobs.append(
        {
            "job_name": "envoy",
            "metrics_path": "/stats/prometheus",
            "static_configs": [
                {"targets": [f"{envoy.host}:{envoy.admin_port}"], "labels": {"service": "envoy"}}
            ],
        }
    )
    return {
        "global": {
            "scrape_interval": interval,
            # A scrape must end before the next one starts.
            "scrape_timeout": _duration(min(options.scrape_interval_s, 10.0)),
            "evaluation_interval": _duration(options.evaluation_interval_s),
            "external_labels": {"stack": "llmproxy"},
        },
        "rule_files": list(options.rule_files),
        "alerting": {
            "alertmanagers": [{"static_configs": [{"targets": list(options.alertmanagers)}]}]
        },
        "scrape_configs": jobs,
    }
