"""Builds Envoy's bootstrap configuration from the stack configuration: a pure function."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llmproxy.common.contract import SERVICES
from llmproxy.config import StackConfig
from llmproxy.envoyconf.clusters import service_cluster, socket_address
from llmproxy.envoyconf.egress import egress_listener, provider_cluster
from llmproxy.envoyconf.fault import rtds_layer
from llmproxy.envoyconf.listeners import client_listener, control_listener
from llmproxy.envoyconf.tracing import collector_clusters, tracing_runtime


def build_bootstrap(
    config: StackConfig, descriptor: bytes, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Envoy's bootstrap for config; descriptor is the serialized FileDescriptorSet of our APIs.

    environ decides which providers are enabled (their keys set), hence the egress clusters.
    """
    services = config.services
    providers = config.provider_endpoints(environ if environ is not None else {})
    return {
        "node": {"id": "llmproxy", "cluster": "llmproxy"},
        "admin": {"address": socket_address(config.envoy.host, config.envoy.admin_port)},
        "static_resources": {
            "listeners": [
                client_listener(config, descriptor),
                control_listener(config),
                egress_listener(config, providers),
            ],
            "clusters": [
                *(service_cluster(name, getattr(services, name)) for name in SERVICES),
                *(provider_cluster(p) for p in providers),
                *collector_clusters(config.tracing),
            ],
        },
        "layered_runtime": {
            "layers": [
                {"name": "static", "static_layer": tracing_runtime(config.tracing)},
                # Chaos experiments' fault keys, from the fault service; admin overrides win.
                rtds_layer(),
                {"name": "admin", "admin_layer": {}},
            ]
        },
    }
