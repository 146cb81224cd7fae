"""Monitoring for a Prometheus Operator: a PrometheusRule, ServiceMonitors and the dashboards.

The rules are the groups of deploy/prometheus/rules/*.yml (obsconf.prometheus.RULES_DIR, read by
build.read_inputs), the same files the local and compose Prometheus load, so an alert cannot
differ between them. The ServiceMonitors give every target the `job` and `service` labels
obsconf's scrape config gives it (the service's name, `envoy` for Envoy), which the rules and
dashboards group by.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from llmproxy.common.errors import ConfigError
from llmproxy.k8sconf.objects import (
    ADMIN,
    ENVOY,
    ENVOY_COMPONENT,
    METRICS,
    PART_OF,
    SERVICE_COMPONENT,
    component_selector,
    metadata,
)

MONITORING_API = "monitoring.coreos.com/v1"
NAME_LABEL = "app.kubernetes.io/name"
# kube-prometheus-stack's Grafana sidecar loads every ConfigMap with this label as dashboards.
DASHBOARD_LABEL = {"grafana_dashboard": "1"}


def rule_groups(rules_dir: Path) -> list[dict[str, Any]]:
    """The rule groups of every rule file, files in name order."""
    groups: list[dict[str, Any]] = []
    for path in sorted(rules_dir.glob("*.yml")):
        data = yaml.safe_load(path.read_text())
        if not isinstance(data, dict) or not isinstance(data.get("groups"), list):
            raise ConfigError(f"{path}: a Prometheus rule file has a list of groups")
        groups.extend(data["groups"])
    return groups


def prometheus_rule(groups: list[dict[str, Any]]) -> dict[str, Any]:
    """The PrometheusRule holding groups."""
    return {
        "apiVersion": MONITORING_API,
        "kind": "PrometheusRule",
        "metadata": metadata(PART_OF, "monitoring"),
        "spec": {"groups": groups},
    }


def service_monitor(name: str, component: str, port: str, path: str = "/metrics") -> dict[str, Any]:
    """A ServiceMonitor scraping the named port of every Service of component."""
    return {
        "apiVersion": MONITORING_API,
        "kind": "ServiceMonitor",
        "metadata": metadata(name, "monitoring"),
        "spec": {
            "jobLabel": NAME_LABEL,
            "selector": {"matchLabels": component_selector(component)},
            "endpoints": [
                {
                    "port": port,
                    "path": path,
                    "interval": "15s",
                    "relabelings": [
                        {
                            "sourceLabels": [
                                "__meta_kubernetes_service_label_app_kubernetes_io_name"
                            ],
                            "targetLabel": "service",
                        }
                    ],
                }
            ],
        },
    }


def monitors(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The PrometheusRule (of groups) and ServiceMonitors of the base."""
    return [
        prometheus_rule(groups),
        service_monitor(f"{PART_OF}-services", SERVICE_COMPONENT, METRICS),
        # The internal Service only: it has the admin port; the public one has no metrics.
        service_monitor(f"{PART_OF}-{ENVOY}", ENVOY_COMPONENT, ADMIN, "/stats/prometheus"),
    ]
