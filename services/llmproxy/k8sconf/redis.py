"""The Redis Sentinel option: a kustomize component with a three-node Sentinel StatefulSet.

By default the stack's Redis is external: its URL is a key of the Secret. With
`components: [components/redis-sentinel]` in an overlay, each of three pods runs a Redis (pod 0
the first primary, the others its replicas) and a Sentinel beside it, and every service's
LLMPROXY__REDIS__URL is patched to the Sentinel URL. A pod that restarts asks the other
Sentinels for the current primary before it picks a role, so a failover survives restarts.
"""

from __future__ import annotations

from typing import Any

from llmproxy.common.settings import parse_sentinel_url
from llmproxy.k8sconf.objects import (
    NAMESPACE,
    REDIS_COMPONENT,
    REDIS_IMAGE,
    SERVICE_COMPONENT,
    component_selector,
    container_port,
    labels,
    metadata,
    port,
    selector,
)
from llmproxy.k8sconf.pods import container_security, mount, pod_spec, resources, scratch_volume
from llmproxy.k8sconf.policies import policy, tcp
from llmproxy.k8sconf.scaling import disruption_budget
from llmproxy.k8sconf.workloads import REDIS_PORT

NAME = "redis-sentinel"
REPLICAS = 3
SENTINEL_PORT = 26379
PRIMARY_NAME = "llmproxy"
QUORUM = 2
HOSTS = [f"{NAME}-{i}.{NAME}" for i in range(REPLICAS)]
URL = f"redis+sentinel://{','.join(f'{h}:{SENTINEL_PORT}' for h in HOSTS)}/{PRIMARY_NAME}/0"
parse_sentinel_url(URL)  # the services must accept it

# Writes redis.conf and sentinel.conf into /conf: the primary is whom a running Sentinel names,
# else pod 0. Hostnames are announced, so clients and Sentinels follow pods across new IPs.
INIT_SCRIPT = f"""set -eu
self="$POD_NAME.{NAME}"
primary=""
for host in {" ".join(HOSTS)}; do
  [ "$host" = "$self" ] && continue
  primary=$(redis-cli -h "$host" -p {SENTINEL_PORT} --raw \\
    sentinel get-master-addr-by-name {PRIMARY_NAME} 2>/dev/null | head -n 1) || primary=""
  [ -n "$primary" ] && break
done
[ -n "$primary" ] || primary="{HOSTS[0]}"
{{
  echo "dir /data"
  echo "appendonly yes"
  echo "appendfsync everysec"
  echo "save ''"
  echo "replica-announce-ip $self"
  [ "$primary" = "$self" ] || echo "replicaof $primary {REDIS_PORT}"
}} > /conf/redis.conf
{{
  echo "port {SENTINEL_PORT}"
  echo "dir /conf"
  echo "sentinel resolve-hostnames yes"
  echo "sentinel announce-hostnames yes"
  echo "sentinel announce-ip $self"
  echo "sentinel monitor {PRIMARY_NAME} $primary {REDIS_PORT} {QUORUM}"
  echo "sentinel down-after-milliseconds {PRIMARY_NAME} 5000"
  echo "sentinel failover-timeout {PRIMARY_NAME} 30000"
}} > /conf/sentinel.conf
"""


def _container(name: str, args: list[str], port_name: str, number: int) -> dict[str, Any]:
    ping = {"exec": {"command": ["redis-cli", "-p", str(number), "ping"]}, "timeoutSeconds": 2}
    return {
        "name": name,
        "image": REDIS_IMAGE,
        "imagePullPolicy": "Always",
        "args": args,
        "ports": [container_port(port_name, number)],
        "readinessProbe": {**ping, "periodSeconds": 5},
        "livenessProbe": {**ping, "periodSeconds": 10, "failureThreshold": 6},
        "resources": resources("100m", "256Mi", "1", "1Gi"),
        "securityContext": container_security(),
        "volumeMounts": [
            mount("conf", "/conf", read_only=False),
            mount("data", "/data", read_only=False),
        ],
    }


def stateful_set() -> dict[str, Any]:
    """Three pods, each a Redis and its Sentinel, with a volume of its own for the data."""
    init = {
        "name": "config",
        "image": REDIS_IMAGE,
        "imagePullPolicy": "Always",
        "command": ["sh", "-c", INIT_SCRIPT],
        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "resources": resources("50m", "32Mi", "200m", "64Mi"),
        "securityContext": container_security(),
        "volumeMounts": [mount("conf", "/conf", read_only=False)],
    }
    containers = [
        _container("redis", ["redis-server", "/conf/redis.conf"], "redis", REDIS_PORT),
        _container(
            "sentinel",
            ["redis-server", "/conf/sentinel.conf", "--sentinel"],
            "sentinel",
            SENTINEL_PORT,
        ),
    ]
    spec = pod_spec(NAME, containers, [scratch_volume("conf", "16Mi")], grace_s=30)
    spec["initContainers"] = [init]
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": metadata(NAME, REDIS_COMPONENT),
        "spec": {
            "serviceName": NAME,
            "replicas": REPLICAS,
            "selector": {"matchLabels": selector(NAME)},
            "template": {"metadata": {"labels": labels(NAME, REDIS_COMPONENT)}, "spec": spec},
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data"},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": "1Gi"}},
                    },
                }
            ],
        },
    }


def headless_service() -> dict[str, Any]:
    """Stable names per pod; published before they are ready, so the pods find each other."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(NAME, REDIS_COMPONENT),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": selector(NAME),
            "ports": [port("redis", REDIS_PORT), port("sentinel", SENTINEL_PORT)],
        },
    }


def network_policy() -> dict[str, Any]:
    """The services and the Redis pods themselves (replication, Sentinel gossip) only."""
    sources = [
        {"podSelector": {"matchLabels": component_selector(SERVICE_COMPONENT)}},
        {"podSelector": {"matchLabels": selector(NAME)}},
    ]
    return policy(
        NAME,
        REDIS_COMPONENT,
        selector(NAME),
        [{"from": sources, "ports": tcp(REDIS_PORT, SENTINEL_PORT)}],
    )


def objects() -> list[dict[str, Any]]:
    """Everything the component adds, in the base's namespace (an overlay's `namespace` wins)."""
    found = [
        stateful_set(),
        headless_service(),
        network_policy(),
        disruption_budget(NAME, REDIS_COMPONENT),
    ]
    for item in found:
        item["metadata"]["namespace"] = NAMESPACE
    return found


def url_patch(env_index: int, env_name: str) -> list[dict[str, Any]]:
    """A JSON patch pointing a service's Redis URL at the Sentinels; it fails on a Deployment
    whose env entry env_index is not env_name instead of replacing the wrong variable."""
    path = f"/spec/template/spec/containers/0/env/{env_index}"
    return [
        {"op": "test", "path": f"{path}/name", "value": env_name},
        {"op": "replace", "path": path, "value": {"name": env_name, "value": URL}},
    ]
