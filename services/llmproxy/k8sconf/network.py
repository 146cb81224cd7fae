"""The Services: headless ones for what is resolved endpoint by endpoint, Envoy's two.

Envoy's clusters and the services' gRPC clients resolve every ready pod of a service through its
headless Service (STRICT_DNS, `dns:///`), and balance over them themselves; a virtual IP would
hide the pods behind one connection. Envoy has a public Service with the client listener only,
and an internal one with the ports the pods use: control (the router's usage reconciliation),
egress (provider calls) and admin (the fault service's traffic samples, Prometheus).
"""

from __future__ import annotations

from typing import Any

from llmproxy.common.contract import SERVICES
from llmproxy.common.settings import ServiceSettings
from llmproxy.config import StackConfig
from llmproxy.k8sconf.objects import (
    ADMIN,
    CONTROL,
    EGRESS,
    ENVOY,
    ENVOY_COMPONENT,
    ENVOY_INTERNAL,
    GRPC,
    HTTP,
    METRICS,
    REDIS_CACHE,
    REDIS_COMPONENT,
    SERVICE_COMPONENT,
    labels,
    port,
    selector,
)
from llmproxy.k8sconf.workloads import REDIS_PORT


def service(
    name: str, component: str, target: str, ports: list[dict[str, Any]], *, headless: bool
) -> dict[str, Any]:
    """A Service named name selecting target's pods."""
    spec: dict[str, Any] = {"selector": selector(target), "ports": ports}
    if headless:
        spec["clusterIP"] = "None"
    # Labelled as the workload it selects: the ServiceMonitors name targets after it.
    meta = {"name": name, "labels": labels(target, component)}
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": spec}


def service_ports(settings: ServiceSettings) -> list[dict[str, Any]]:
    """A control-plane service's gRPC and metrics ports."""
    return [port(GRPC, settings.grpc_port), port(METRICS, settings.metrics_port)]


def services(config: StackConfig) -> list[dict[str, Any]]:
    """Every Service of the base; config is the in-cluster configuration."""
    found = [
        service(
            name,
            SERVICE_COMPONENT,
            name,
            service_ports(getattr(config.services, name)),
            headless=True,
        )
        for name in SERVICES
    ]
    envoy = config.envoy
    found.append(
        service(ENVOY, ENVOY_COMPONENT, ENVOY, [port(HTTP, envoy.listener_port)], headless=False)
    )
    internal = [
        port(CONTROL, envoy.control_port),
        port(EGRESS, envoy.egress_port),
        port(ADMIN, envoy.admin_port),
    ]
    found.append(service(ENVOY_INTERNAL, ENVOY_COMPONENT, ENVOY, internal, headless=False))
    if config.cache_redis_url is not None:
        found.append(
            service(
                REDIS_CACHE,
                REDIS_COMPONENT,
                REDIS_CACHE,
                [port("redis", REDIS_PORT)],
                headless=False,
            )
        )
    return found
