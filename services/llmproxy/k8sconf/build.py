"""The kustomize base as files: a pure function from the configuration to {path: text}.

Objects of one kind go in one file; the configuration files the pods mount are plain files that
kustomization.yaml's configMapGenerator turns into ConfigMaps (a hash in their names rolls the
pods when a file changes). The Redis Sentinel option is a component beside the base.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from llmproxy.common.descriptors import descriptor_set
from llmproxy.common.limits_file import load_limits
from llmproxy.config import StackConfig
from llmproxy.envoyconf.build import build_bootstrap
from llmproxy.k8sconf import redis
from llmproxy.k8sconf.monitoring import DASHBOARD_LABEL, monitors, rule_groups
from llmproxy.k8sconf.network import services
from llmproxy.k8sconf.objects import (
    CONFIG_MAP,
    DASHBOARDS_CONFIG_MAP,
    ENVOY_CONFIG_MAP,
    HEADER,
    IMAGE_NAME,
    IMAGE_TAG,
    NAMESPACE,
    PART_OF,
    REDIS_IMAGE,
)
from llmproxy.k8sconf.policies import network_policies
from llmproxy.k8sconf.scaling import autoscalers, disruption_budgets
from llmproxy.k8sconf.secrets import REDIS_URL_ENV
from llmproxy.k8sconf.stack import for_envoy, in_cluster, provider_environ
from llmproxy.k8sconf.workloads import deployments
from llmproxy.obsconf.prometheus import REPO_ROOT, RULES_DIR

KUSTOMIZE_API = "kustomize.config.k8s.io"
SENTINEL_DIR = "components/redis-sentinel"
Files = dict[str, str]
DASHBOARDS_DIR = REPO_ROOT / "deploy" / "grafana" / "dashboards"


def dump(*objects: Any) -> str:
    """YAML documents with the do-not-edit header."""
    return HEADER + "---\n".join(yaml.safe_dump(o, sort_keys=False) for o in objects)


def namespace() -> dict[str, Any]:
    """The namespace; the restricted Pod Security Standard holds for every pod of the base."""
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": NAMESPACE,
            "labels": {
                "app.kubernetes.io/part-of": PART_OF,
                "pod-security.kubernetes.io/enforce": "restricted",
            },
        },
    }


def pods_config(config: StackConfig) -> str:
    """llmproxy.yaml as the pods read it: only what differs from the defaults."""
    data = in_cluster(config).model_dump(mode="json", exclude_defaults=True)
    return HEADER + yaml.safe_dump(data, sort_keys=False)


def envoy_config(config: StackConfig) -> str:
    """Envoy's bootstrap for the cluster, by envoyconf from the same configuration."""
    descriptor = descriptor_set().SerializeToString(deterministic=True)
    bootstrap = build_bootstrap(for_envoy(config), descriptor, provider_environ(config))
    return HEADER + yaml.safe_dump(bootstrap, sort_keys=False)


def kustomization(dashboards: list[str]) -> dict[str, Any]:
    """The base's kustomization.yaml."""
    return {
        "apiVersion": f"{KUSTOMIZE_API}/v1beta1",
        "kind": "Kustomization",
        "namespace": NAMESPACE,
        "resources": [
            "namespace.yaml",
            "deployments.yaml",
            "services.yaml",
            "autoscaling.yaml",
            "network-policies.yaml",
            "monitoring.yaml",
        ],
        "configMapGenerator": [
            {"name": CONFIG_MAP, "files": ["config/llmproxy.yaml", "config/ratelimit.yaml"]},
            {"name": ENVOY_CONFIG_MAP, "files": ["envoy/envoy.yaml"]},
            {
                "name": DASHBOARDS_CONFIG_MAP,
                "files": [f"dashboards/{name}" for name in dashboards],
                # A fixed name: Grafana's sidecar would load an old hashed copy too.
                "options": {"disableNameSuffixHash": True, "labels": DASHBOARD_LABEL},
            },
        ],
        # The one image of every llmproxy pod: `kustomize edit set image llmproxy=<yours>`.
        "images": [
            {"name": IMAGE_NAME, "newName": IMAGE_NAME, "newTag": IMAGE_TAG},
            {"name": REDIS_IMAGE.split(":")[0], "newTag": REDIS_IMAGE.split(":")[1]},
        ],
    }


def sentinel_component(config: StackConfig) -> Files:
    """The Redis Sentinel component's files."""
    patches = []
    for deployment in deployments(in_cluster(config)):
        env = deployment["spec"]["template"]["spec"]["containers"][0].get("env", [])
        names = [entry["name"] for entry in env]
        if REDIS_URL_ENV in names:
            patches.append(
                {
                    "target": {"kind": "Deployment", "name": deployment["metadata"]["name"]},
                    "patch": json.dumps(redis.url_patch(names.index(REDIS_URL_ENV), REDIS_URL_ENV)),
                }
            )
    component = {
        "apiVersion": f"{KUSTOMIZE_API}/v1alpha1",
        "kind": "Component",
        "resources": ["redis-sentinel.yaml"],
        "patches": patches,
    }
    return {
        f"{SENTINEL_DIR}/kustomization.yaml": dump(component),
        f"{SENTINEL_DIR}/redis-sentinel.yaml": dump(*redis.objects()),
    }


@dataclass(frozen=True)
class Inputs:
    """What the manifests hold besides the configuration: files read once, by read_inputs."""

    limits: str  # the limits file's text
    rule_groups: list[dict[str, Any]]  # the Prometheus rule groups
    dashboards: dict[str, str]  # Grafana dashboard file name -> its JSON


def read_inputs(config: StackConfig) -> Inputs:
    """The limits file (validated, from where config names it), the rules and the dashboards."""
    settings = config.services.ratelimit
    loaded = load_limits(settings.limits_file, settings.domain)
    return Inputs(
        limits=loaded.path.read_text(),
        rule_groups=rule_groups(RULES_DIR),
        dashboards={p.name: p.read_text() for p in sorted(DASHBOARDS_DIR.glob("*.json"))},
    )


def build_files(config: StackConfig, inputs: Inputs) -> Files:
    """Every file of deploy/k8s for config (Envoy's limits' failure modes come from the limits
    file config names, as envoyconf reads them)."""
    dashboards = inputs.dashboards
    cluster = in_cluster(config)
    workloads = deployments(cluster)
    return {
        "kustomization.yaml": dump(kustomization(sorted(dashboards))),
        "namespace.yaml": dump(namespace()),
        "deployments.yaml": dump(*workloads),
        "services.yaml": dump(*services(cluster)),
        "autoscaling.yaml": dump(*autoscalers(cluster), *disruption_budgets(workloads)),
        "network-policies.yaml": dump(*network_policies(cluster)),
        "monitoring.yaml": dump(*monitors(inputs.rule_groups)),
        "config/llmproxy.yaml": pods_config(config),
        "config/ratelimit.yaml": inputs.limits,
        "envoy/envoy.yaml": envoy_config(config),
        **{f"dashboards/{name}": text for name, text in sorted(dashboards.items())},
        **sentinel_component(config),
    }


def write(out_dir: Path, files: Files) -> list[Path]:
    """Write files under out_dir; returns the paths written."""
    written = []
    for relative, text in files.items():
        path = out_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written
