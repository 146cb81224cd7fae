"""HorizontalPodAutoscalers and PodDisruptionBudgets.

The request path (Envoy, router, authz, ratelimit) scales on CPU from its configured replicas up
to four times as many. The health service probes once per interval for its whole fleet and the
fault service runs one leader, so neither gains from more replicas under load: they keep their
`instances`. A PodDisruptionBudget lets a node drain take one pod of a workload at a time, so a
workload with two or more replicas keeps serving through it.
"""

from __future__ import annotations

from typing import Any

from llmproxy.config import StackConfig
from llmproxy.k8sconf.objects import ENVOY, ENVOY_COMPONENT, SERVICE_COMPONENT, metadata, selector
from llmproxy.k8sconf.workloads import ENVOY_REPLICAS

AUTOSCALED = ("router", "authz", "ratelimit")
SCALE_FACTOR = 4
CPU_TARGET_PERCENT = 70


def autoscaler(name: str, component: str, replicas: int) -> dict[str, Any]:
    """An autoscaling/v2 HPA of Deployment name on CPU utilization (of its requests)."""
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata(name, component),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": replicas,
            "maxReplicas": replicas * SCALE_FACTOR,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": CPU_TARGET_PERCENT},
                    },
                }
            ],
        },
    }


def disruption_budget(name: str, component: str) -> dict[str, Any]:
    """At most one pod of name evicted at a time (never blocking a drain, even with one)."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(name, component),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector(name)}},
    }


def autoscalers(config: StackConfig) -> list[dict[str, Any]]:
    """The HPAs of the base."""
    return [
        autoscaler(ENVOY, ENVOY_COMPONENT, ENVOY_REPLICAS),
        *(
            autoscaler(name, SERVICE_COMPONENT, getattr(config.services, name).instances)
            for name in AUTOSCALED
        ),
    ]


def disruption_budgets(deployments: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One PDB per Deployment."""
    return [
        disruption_budget(
            d["metadata"]["name"], d["metadata"]["labels"]["app.kubernetes.io/component"]
        )
        for d in deployments
    ]
