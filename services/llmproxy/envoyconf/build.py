"""Envoy's bootstrap configuration, built from the stack configuration by a pure function, and
the files it is written to beside our descriptor set."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from llmproxy.common.contract import ENVOYS_CLUSTER, SERVICES
from llmproxy.config import StackConfig
from llmproxy.envoyconf.clusters import service_cluster, socket_address
from llmproxy.envoyconf.edge import edge_runtime, envoys_cluster, overload_manager
from llmproxy.envoyconf.egress import egress_listener, provider_cluster
from llmproxy.envoyconf.fault import rtds_layer
from llmproxy.envoyconf.listeners import client_listener, control_listener
from llmproxy.envoyconf.overload import check_circuit_breakers
from llmproxy.envoyconf.resilience import router_retry_budget
from llmproxy.envoyconf.tracing import collector_clusters, tracing_runtime


def build_bootstrap(
    config: StackConfig, descriptor: bytes, environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Envoy's bootstrap for config; descriptor is the serialized FileDescriptorSet of our APIs.

    environ decides which providers are enabled (their keys set), hence the egress clusters.
    """
    services = config.services
    providers = config.provider_endpoints(environ if environ is not None else {})
    # The clusters Envoy's per-request checks call: bounded, so a burst is shed at once; the
    # router's: every request a lost instance held may be retried.
    breakers = {
        "authz": check_circuit_breakers(config.envoy.ext_authz_max_requests),
        "ratelimit": check_circuit_breakers(config.envoy.ratelimit_max_requests),
        "router": router_retry_budget(),
    }
    shared = config.edge.share_across_replicas
    bootstrap: dict[str, Any] = {
        # Replicas keep the cluster; each needs an id of its own (`--service-node`) to count as
        # one of the Envoys sharing the edge buckets.
        "node": {"id": "llmproxy", "cluster": "llmproxy"},
        "admin": {
            "address": socket_address(config.envoy.host, config.envoy.admin_port),
            # Scrapes and operators reach the admin interface however many clients connect.
            "ignore_global_conn_limit": True,
        },
        "overload_manager": overload_manager(config.edge),
        "static_resources": {
            "listeners": [
                client_listener(config, descriptor),
                control_listener(config),
                egress_listener(config, providers),
            ],
            "clusters": [
                *(
                    service_cluster(name, getattr(services, name), breakers.get(name))
                    for name in SERVICES
                ),
                *(provider_cluster(p) for p in providers),
                *collector_clusters(config.tracing),
                *([envoys_cluster()] if shared else []),
            ],
        },
        "layered_runtime": {
            "layers": [
                {
                    "name": "static",
                    "static_layer": {
                        **tracing_runtime(config.tracing),
                        **edge_runtime(config.edge),
                    },
                },
                # Chaos experiments' fault keys, from the fault service; admin overrides win.
                rtds_layer(),
                {"name": "admin", "admin_layer": {}},
            ]
        },
    }
    if shared:
        bootstrap["cluster_manager"] = {"local_cluster_name": ENVOYS_CLUSTER}
    return bootstrap


ENVOY_FILE = "envoy.yaml"
PROTOSET_FILE = "llmproxy.protoset"


def write(out_dir: Path, bootstrap: dict[str, object], descriptor: bytes) -> Path:
    """Write envoy.yaml and llmproxy.protoset (for grpcurl) into out_dir; returns envoy.yaml."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / PROTOSET_FILE).write_bytes(descriptor)
    path = out_dir / ENVOY_FILE
    path.write_text(yaml.safe_dump(bootstrap, sort_keys=False))
    return path
