"""Envoy's egress path: the listener the router calls providers through, one cluster each.

Going through Envoy puts every provider call under Envoy's circuit breakers, outlier detection,
fault injection and per-cluster stats. The router calls /<provider>/<path>; the route rewrites
the prefix to the provider's base path and sends it to that provider's cluster.

Each provider cluster takes its endpoints, and their health, from the health service over EDS
(`llmproxy_health`): an UNHEALTHY or drained provider gets 503 from Envoy at once, without a
connection attempt, and the router moves on to its next target.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from llmproxy.common.contract import provider_cluster_name, service_cluster_name
from llmproxy.common.net import is_ip
from llmproxy.common.settings import ProviderSettings
from llmproxy.config import StackConfig
from llmproxy.envoyconf.clusters import socket_address, typed
from llmproxy.envoyconf.fault import egress_fault_filter, provider_route_faults
from llmproxy.envoyconf.tracing import hcm_tracing

SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
# How long Envoy waits for the health service's first endpoints before it starts anyway (the
# provider clusters then have no endpoint, hence 503, until the health service answers).
EDS_INITIAL_FETCH_TIMEOUT = "3s"


def health_eds_config() -> dict[str, Any]:
    """The config source of the provider clusters' endpoints: the health service, over gRPC."""
    return {
        "resource_api_version": "V3",
        "initial_fetch_timeout": EDS_INITIAL_FETCH_TIMEOUT,
        "api_config_source": {
            "api_type": "GRPC",
            "transport_api_version": "V3",
            "grpc_services": [
                {
                    "envoy_grpc": {
                        "cluster_name": service_cluster_name("health"),
                        # Reconnect within seconds of the health service coming back (Envoy's
                        # default backoff grows to 30 s; it keeps the last endpoints meanwhile).
                        "retry_policy": {
                            "retry_back_off": {"base_interval": "0.25s", "max_interval": "2s"}
                        },
                    }
                }
            ],
            "set_node_on_first_message_only": True,
        },
    }


def provider_cluster(provider: ProviderSettings) -> dict[str, Any]:
    """The cluster of one provider: endpoints over EDS, TLS for https, breakers and ejection."""
    url = urlsplit(provider.base_url)
    host = url.hostname or ""
    cluster: dict[str, Any] = {
        "name": provider_cluster_name(provider.name),
        "type": "EDS",
        "eds_cluster_config": {
            "service_name": provider_cluster_name(provider.name),
            "eds_config": health_eds_config(),
        },
        "connect_timeout": "5s",
        # No panic mode: with every endpoint unhealthy Envoy must refuse (503 at once) rather
        # than send to them anyway, so that a provider the health service marks down is skipped.
        "common_lb_config": {"healthy_panic_threshold": {"value": 0}},
        "circuit_breakers": {
            "thresholds": [
                {
                    "max_connections": 2048,
                    "max_pending_requests": 2048,
                    "max_requests": 2048,
                    "max_retries": 3,
                }
            ]
        },
        # Five 5xx in a row eject the provider for 30 s (between two probes the health service
        # has not caught up): the router's next call to it fails at once (503, no healthy
        # upstream) and the router moves on to the next target.
        "outlier_detection": {
            "consecutive_5xx": 5,
            "interval": "5s",
            "base_ejection_time": "30s",
            "max_ejection_percent": 100,
        },
    }
    if url.scheme == "https":
        cluster["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": typed(
                "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                sni=host,
                common_tls_context={
                    "validation_context": {"trusted_ca": {"filename": SYSTEM_CA_BUNDLE}}
                },
            ),
        }
    return cluster


def _route(provider: ProviderSettings, timeout_s: float, bandwidth_kbps: int) -> dict[str, Any]:
    url = urlsplit(provider.base_url)
    route: dict[str, Any] = {
        "cluster": provider_cluster_name(provider.name),
        "prefix_rewrite": f"{url.path.rstrip('/')}/",
        "timeout": f"{timeout_s}s",
        "idle_timeout": f"{provider.timeout_s}s",
    }
    if is_ip(url.hostname or ""):
        route["host_rewrite_literal"] = url.netloc
    else:
        route["auto_host_rewrite"] = True
    return {
        "match": {"prefix": f"/{provider.name}/"},
        "route": route,
        "typed_per_filter_config": provider_route_faults(provider.name, bandwidth_kbps),
    }


def egress_listener(config: StackConfig, providers: list[ProviderSettings]) -> dict[str, Any]:
    """The loopback listener the router sends provider calls to."""
    envoy = config.envoy
    route_config = {
        "name": "egress",
        "virtual_hosts": [
            {
                "name": "providers",
                "domains": ["*"],
                "routes": [
                    _route(p, envoy.request_timeout_s, config.services.fault.bandwidth_kbps)
                    for p in providers
                ],
            }
        ],
    }
    hcm = typed(
        "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        stat_prefix="egress",
        codec_type="AUTO",
        route_config=route_config,
        **hcm_tracing(config.tracing),
        http_filters=[
            egress_fault_filter(config.services.fault.bandwidth_kbps),
            {
                "name": "envoy.filters.http.router",
                "typed_config": typed("envoy.extensions.filters.http.router.v3.Router"),
            },
        ],
    )
    return {
        "name": "egress",
        "address": socket_address(envoy.host, envoy.egress_port),
        # edge.max_connections counts clients only: the router's provider calls are not theirs.
        "ignore_global_conn_limit": True,
        "filter_chains": [
            {
                "filters": [
                    {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}
                ]
            }
        ],
    }
