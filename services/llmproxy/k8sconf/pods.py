"""What every pod shares: a non-root, read-only, capability-free sandbox and its volumes.

Every container runs as the Dockerfile's numeric user with a read-only root filesystem, no
capabilities, the runtime's default seccomp profile and no service account token (nothing here
talks to the Kubernetes API). A process that writes scratch files gets an emptyDir at /tmp.
"""

from __future__ import annotations

from typing import Any

from llmproxy.k8sconf.objects import LLMPROXY_UID, selector

RUNTIME_DEFAULT = {"type": "RuntimeDefault"}
TMP = "tmp"


def pod_security() -> dict[str, Any]:
    """The pod-level security context."""
    return {
        "runAsNonRoot": True,
        "runAsUser": LLMPROXY_UID,
        "runAsGroup": LLMPROXY_UID,
        "fsGroup": LLMPROXY_UID,
        "seccompProfile": RUNTIME_DEFAULT,
    }


def container_security() -> dict[str, Any]:
    """The container-level security context (repeated so that each container states it)."""
    return {
        "runAsNonRoot": True,
        "runAsUser": LLMPROXY_UID,
        "runAsGroup": LLMPROXY_UID,
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": RUNTIME_DEFAULT,
    }


def resources(cpu: str, memory: str, cpu_limit: str, memory_limit: str) -> dict[str, Any]:
    """Requests (what the scheduler reserves) and limits (where the kernel stops the pod)."""
    return {
        "requests": {"cpu": cpu, "memory": memory},
        "limits": {"cpu": cpu_limit, "memory": memory_limit},
    }


def scratch_volume(name: str = TMP, size: str = "64Mi") -> dict[str, Any]:
    """A writable emptyDir, bounded so that a runaway writer is evicted, not the node filled."""
    return {"name": name, "emptyDir": {"sizeLimit": size}}


def config_volume(name: str, config_map: str) -> dict[str, Any]:
    """A ConfigMap mounted as files."""
    return {"name": name, "configMap": {"name": config_map}}


def mount(name: str, path: str, *, read_only: bool = True) -> dict[str, Any]:
    """A volume mount."""
    return {"name": name, "mountPath": path, "readOnly": read_only}


def spread(name: str) -> list[dict[str, Any]]:
    """Replicas on different nodes where the cluster has them, never blocking scheduling."""
    return [
        {
            "maxSkew": 1,
            "topologyKey": "kubernetes.io/hostname",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": selector(name)},
        }
    ]


def pod_spec(
    name: str,
    containers: list[dict[str, Any]],
    volumes: list[dict[str, Any]],
    grace_s: int,
) -> dict[str, Any]:
    """A pod spec with the shared sandbox."""
    return {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,  # the configuration names every address; no env noise
        "securityContext": pod_security(),
        "terminationGracePeriodSeconds": grace_s,
        "topologySpreadConstraints": spread(name),
        "containers": containers,
        "volumes": volumes,
    }
