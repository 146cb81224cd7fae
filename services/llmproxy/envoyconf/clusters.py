"""Envoy clusters (one HTTP/2 cluster per control-plane service) and shared config helpers."""

from __future__ import annotations

import ipaddress
from typing import Any

from llmproxy.common.contract import service_cluster_name
from llmproxy.common.settings import ServiceSettings
from llmproxy.envoyconf.resilience import (
    check_retry_policy,
    outlier_detection,
    service_health_check,
)

HTTP_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def typed(type_name: str, **fields: Any) -> dict[str, Any]:
    """A typed_config with its @type."""
    return {"@type": f"type.googleapis.com/{type_name}", **fields}


def socket_address(host: str, port: int) -> dict[str, Any]:
    """An Envoy address for host:port."""
    return {"socket_address": {"address": host, "port_value": port}}


def grpc_service(service: str, timeout_s: float) -> dict[str, Any]:
    """A GrpcService reaching one of our services through its cluster, for a check per request.

    A check lost with its instance is retried on another one (resilience.py); timeout_s bounds
    every attempt together.
    """
    return {
        "envoy_grpc": {"cluster_name": service_cluster_name(service)},
        "timeout": f"{timeout_s}s",
        "retry_policy": check_retry_policy(timeout_s),
    }


def _discovery_type(host: str) -> str:
    # An IP literal is STATIC; a name (a compose or Kubernetes service) is resolved by DNS.
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return "STRICT_DNS"
    return "STATIC"


def service_cluster(
    service: str, settings: ServiceSettings, circuit_breakers: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A gRPC (HTTP/2) cluster for one service: every instance an endpoint, each health-checked
    with the gRPC health protocol and ejected when its calls fail (resilience.py)."""
    cluster: dict[str, Any] = {
        "name": service_cluster_name(service),
        "type": _discovery_type(settings.host),
        "connect_timeout": "1s",
        "lb_policy": "LEAST_REQUEST",
        "typed_extension_protocol_options": {
            HTTP_OPTIONS: {
                "@type": f"type.googleapis.com/{HTTP_OPTIONS}",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        },
        "load_assignment": {
            "cluster_name": service_cluster_name(service),
            "endpoints": [
                {
                    "lb_endpoints": [
                        {"endpoint": {"address": socket_address(settings.host, port)}}
                        for port in settings.grpc_ports()
                    ]
                }
            ],
        },
        "health_checks": [service_health_check()],
        # The router's errors are mostly its providers': only its lost connections count.
        "outlier_detection": outlier_detection(answers_for_others=service == "router"),
    }
    if circuit_breakers is not None:
        cluster["circuit_breakers"] = circuit_breakers
    return cluster
