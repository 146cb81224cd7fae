"""NetworkPolicies: nothing reaches a pod unless a rule here admits it.

The data-plane RPCs carry no credential (docs/security.md), so a service's gRPC port admits
Envoy and the other llmproxy services (they call each other: token introspection, health, the
chaos agents) and nothing else; its metrics port admits the monitoring namespace. Envoy's client
listener admits everyone; its control and egress listeners only the services (the router's
usage reconciliation and provider calls), its admin port the services (the fault service's
traffic samples) and the monitoring namespace. Operators reach the control listener with
`kubectl port-forward`, which no NetworkPolicy applies to. Egress is left open: providers and an
external Redis live at addresses only the operator knows.
"""

from __future__ import annotations

from typing import Any

from llmproxy.common.contract import SERVICES
from llmproxy.config import StackConfig
from llmproxy.k8sconf.objects import (
    ENVOY,
    ENVOY_COMPONENT,
    MONITORING_NAMESPACE,
    PART_OF,
    REDIS_CACHE,
    REDIS_COMPONENT,
    SERVICE_COMPONENT,
    component_selector,
    metadata,
    selector,
)
from llmproxy.k8sconf.workloads import REDIS_PORT

FROM_ENVOY = {"podSelector": {"matchLabels": component_selector(ENVOY_COMPONENT)}}
FROM_SERVICES = {"podSelector": {"matchLabels": component_selector(SERVICE_COMPONENT)}}
FROM_MONITORING = {
    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": MONITORING_NAMESPACE}}
}


def tcp(*ports: int) -> list[dict[str, Any]]:
    """NetworkPolicy ports."""
    return [{"protocol": "TCP", "port": p} for p in ports]


def policy(
    name: str, component: str, pods: dict[str, str], ingress: list[dict[str, Any]]
) -> dict[str, Any]:
    """An ingress NetworkPolicy for the pods labelled pods."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(name, component),
        "spec": {
            "podSelector": {"matchLabels": pods},
            "policyTypes": ["Ingress"],
            "ingress": ingress,
        },
    }


def default_deny() -> dict[str, Any]:
    """Every pod of the namespace: no ingress but what another policy admits."""
    deny = policy(f"{PART_OF}-default-deny", "policy", {}, [])
    deny["spec"]["podSelector"] = {}
    return deny


def network_policies(config: StackConfig) -> list[dict[str, Any]]:
    """Every NetworkPolicy of the base; config is the in-cluster configuration."""
    found = [default_deny()]
    for name in SERVICES:
        settings = getattr(config.services, name)
        found.append(
            policy(
                name,
                SERVICE_COMPONENT,
                selector(name),
                [
                    {"from": [FROM_ENVOY, FROM_SERVICES], "ports": tcp(settings.grpc_port)},
                    {"from": [FROM_MONITORING], "ports": tcp(settings.metrics_port)},
                ],
            )
        )
    envoy = config.envoy
    found.append(
        policy(
            ENVOY,
            ENVOY_COMPONENT,
            selector(ENVOY),
            [
                {"ports": tcp(envoy.listener_port)},  # no `from`: every client
                {"from": [FROM_SERVICES], "ports": tcp(envoy.control_port, envoy.egress_port)},
                {"from": [FROM_SERVICES, FROM_MONITORING], "ports": tcp(envoy.admin_port)},
            ],
        )
    )
    if config.cache_redis_url is not None:
        found.append(
            policy(
                REDIS_CACHE,
                REDIS_COMPONENT,
                selector(REDIS_CACHE),
                [
                    {
                        "from": [{"podSelector": {"matchLabels": selector("router")}}],
                        "ports": tcp(REDIS_PORT),
                    }
                ],
            )
        )
    return found
