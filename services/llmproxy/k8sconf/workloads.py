"""The Deployments: one per service, Envoy's, and the response cache's Redis.

Every llmproxy pod runs the one image with the command docker-compose.yml gives the same
process. Requests and limits are starting points for one replica (docs/kubernetes.md); patch
them in an overlay once docs/capacity.md's figures say otherwise.
"""

from __future__ import annotations

import math
from typing import Any

from llmproxy.common.contract import SERVICES
from llmproxy.common.settings import ServiceSettings
from llmproxy.config import StackConfig
from llmproxy.k8sconf.objects import (
    ADMIN,
    CONFIG_DIR,
    CONFIG_FILE,
    CONFIG_MAP,
    CONTROL,
    EGRESS,
    ENVOY,
    ENVOY_COMPONENT,
    ENVOY_CONFIG_MAP,
    ENVOY_DIR,
    GRPC,
    HTTP,
    IMAGE,
    METRICS,
    REDIS_CACHE,
    REDIS_COMPONENT,
    REDIS_IMAGE,
    SERVICE_COMPONENT,
    TMP_DIR,
    container_port,
    metadata,
    selector,
)
from llmproxy.k8sconf.pods import (
    TMP,
    config_volume,
    container_security,
    mount,
    pod_spec,
    resources,
    scratch_volume,
)
from llmproxy.k8sconf.secrets import env_from_secret, refs_for

# Envoy has no `instances`: two replicas, so that one can be drained while the other serves.
ENVOY_REPLICAS = 2
ENVOY_FILE = f"{ENVOY_DIR}/envoy.yaml"
REDIS_PORT = 6379
# (cpu request, memory request, cpu limit, memory limit) per service: the Python services are
# one event loop each, so one core is as much as a replica uses; scale out with replicas.
SERVICE_RESOURCES = {
    "router": ("500m", "256Mi", "1", "1Gi"),
    "ratelimit": ("250m", "192Mi", "1", "512Mi"),
    "authz": ("250m", "192Mi", "1", "512Mi"),
    "health": ("100m", "128Mi", "500m", "256Mi"),
    "fault": ("100m", "128Mi", "500m", "256Mi"),
}


def deployment(name: str, component: str, replicas: int, spec: dict[str, Any]) -> dict[str, Any]:
    """A Deployment of replicas pods of spec, rolled one at a time with no capacity lost."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(name, component),
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": selector(name)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "template": {"metadata": {"labels": metadata(name, component)["labels"]}, "spec": spec},
        },
    }


def _grpc_probes(port: int) -> dict[str, Any]:
    # The overall "" health status: NOT_SERVING only while shutting down or while a required
    # component (the rate limiter's limits) is unhealthy, never for Redis, which each service
    # survives on its fallback; restarting pods would not bring Redis back.
    probe = {"grpc": {"port": port}, "timeoutSeconds": 2}
    return {
        "startupProbe": {**probe, "periodSeconds": 2, "failureThreshold": 30},
        "readinessProbe": {**probe, "periodSeconds": 5, "failureThreshold": 2},
        "livenessProbe": {**probe, "periodSeconds": 10, "failureThreshold": 6},
    }


def service_deployment(config: StackConfig, name: str) -> dict[str, Any]:
    """The Deployment of one control-plane service: `instances` replicas."""
    settings: ServiceSettings = getattr(config.services, name)
    container = {
        "name": name,
        "image": IMAGE,
        "imagePullPolicy": "Always",
        "command": ["python", "-m", f"llmproxy.{name}", "--config", CONFIG_FILE],
        "env": [
            {"name": "LLMPROXY_CONFIG", "value": CONFIG_FILE},
            *env_from_secret(refs_for(config, name)),
        ],
        "ports": [
            container_port(GRPC, settings.grpc_port),
            container_port(METRICS, settings.metrics_port),
        ],
        **_grpc_probes(settings.grpc_port),
        "resources": resources(*SERVICE_RESOURCES[name]),
        "securityContext": container_security(),
        "volumeMounts": [mount("config", CONFIG_DIR), mount(TMP, TMP_DIR, read_only=False)],
    }
    volumes = [config_volume("config", CONFIG_MAP), scratch_volume()]
    # After SIGTERM a service lets in-flight RPCs run shutdown_grace_s; then a margin.
    grace = math.ceil(settings.shutdown_grace_s) + 5
    spec = pod_spec(name, [container], volumes, grace)
    return deployment(name, SERVICE_COMPONENT, settings.instances, spec)


def envoy_deployment(config: StackConfig) -> dict[str, Any]:
    """Envoy's Deployment, running the generated bootstrap of the envoy-config ConfigMap."""
    envoy = config.envoy
    admin = {"path": "/ready", "port": ADMIN}
    # The heap budget is where Envoy's overload manager starts refusing: the limit sits above it.
    memory_limit = f"{math.ceil(config.edge.max_heap_mb * 1.25)}Mi"
    container = {
        "name": ENVOY,
        "image": IMAGE,
        "imagePullPolicy": "Always",
        "command": [
            "envoy",
            "-c",
            ENVOY_FILE,
            "--disable-hot-restart",
            "--log-level",
            "info",
            "--concurrency",
            str(envoy.concurrency),
            # A node id per replica: the edge buckets are shared among the replicas by id.
            "--service-node",
            "$(POD_NAME)",
        ],
        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "ports": [
            container_port(HTTP, envoy.listener_port),
            container_port(CONTROL, envoy.control_port),
            container_port(EGRESS, envoy.egress_port),
            container_port(ADMIN, envoy.admin_port),
        ],
        "startupProbe": {"httpGet": admin, "periodSeconds": 2, "failureThreshold": 30},
        "readinessProbe": {"httpGet": admin, "periodSeconds": 5, "failureThreshold": 2},
        "livenessProbe": {
            "httpGet": {"path": "/server_info", "port": ADMIN},
            "periodSeconds": 10,
            "failureThreshold": 6,
        },
        "resources": resources("500m", "256Mi", str(envoy.concurrency), memory_limit),
        "securityContext": container_security(),
        "volumeMounts": [mount("config", ENVOY_DIR), mount(TMP, TMP_DIR, read_only=False)],
    }
    volumes = [config_volume("config", ENVOY_CONFIG_MAP), scratch_volume()]
    spec = pod_spec(ENVOY, [container], volumes, grace_s=15)
    return deployment(ENVOY, ENVOY_COMPONENT, ENVOY_REPLICAS, spec)


def redis_cache_deployment() -> dict[str, Any]:
    """The response cache's own Redis: disposable (no persistence), as docker-compose's.

    The router sets its maxmemory and eviction policy at startup (services.router.cache).
    """
    ping = {"exec": {"command": ["redis-cli", "ping"]}, "timeoutSeconds": 2}
    container = {
        "name": "redis",
        "image": REDIS_IMAGE,
        "imagePullPolicy": "Always",
        "args": ["redis-server", "--appendonly", "no", "--save", ""],
        "ports": [container_port("redis", REDIS_PORT)],
        "readinessProbe": {**ping, "periodSeconds": 5},
        "livenessProbe": {**ping, "periodSeconds": 10, "failureThreshold": 6},
        "resources": resources("100m", "320Mi", "500m", "512Mi"),
        "securityContext": container_security(),
        "volumeMounts": [mount("data", "/data", read_only=False)],
    }
    spec = pod_spec(REDIS_CACHE, [container], [scratch_volume("data", "1Gi")], grace_s=10)
    return deployment(REDIS_CACHE, REDIS_COMPONENT, 1, spec)


def deployments(config: StackConfig) -> list[dict[str, Any]]:
    """Every Deployment of the base; config is the in-cluster configuration."""
    found = [service_deployment(config, name) for name in SERVICES]
    found.append(envoy_deployment(config))
    if config.cache_redis_url is not None:
        found.append(redis_cache_deployment())
    return found
