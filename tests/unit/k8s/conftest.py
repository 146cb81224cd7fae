"""The Kubernetes manifests as the cluster would receive them: `kubectl kustomize` output.

Every test reads the rendered objects, not the generator's dicts, so that what kustomize does
(namespaces, ConfigMap name hashes, the images transformer, the Sentinel component's patches)
is part of what is checked. kubectl comes from Debian's kubernetes-client (scripts/bootstrap.sh).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
K8S_DIR = ROOT / "deploy" / "k8s"
SENTINEL_DIR = K8S_DIR / "components" / "redis-sentinel"
KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"

Objects = list[dict[str, Any]]


def kustomize_major() -> int:
    """The major version of the kustomize built into kubectl (components need v4 or later)."""
    done = subprocess.run(
        [KUBECTL, "version", "--client", "--output=json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, f"{KUBECTL} does not run: {done.stderr}"
    version = str(json.loads(done.stdout).get("kustomizeVersion", "v0"))
    return int(version.lstrip("v").split(".")[0] or 0)


@pytest.fixture(scope="session", autouse=True)
def recent_kubectl() -> None:
    assert kustomize_major() >= 4, (
        f"{KUBECTL} embeds kustomize older than v4 (kubectl before 1.21): install a newer kubectl"
    )


def kustomize(directory: Path) -> str:
    """`kubectl kustomize directory`; fails the test with kubectl's message if it cannot."""
    done = subprocess.run(
        [KUBECTL, "kustomize", str(directory)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, f"kubectl kustomize {directory} failed:\n{done.stderr}"
    return done.stdout


def with_sentinel(tmp: Path, base: Path = K8S_DIR) -> Path:
    """An overlay of base with the Redis Sentinel component, as an operator would write it."""
    relative = Path(os.path.relpath(base, tmp))
    (tmp / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": [str(relative)],
                "components": [str(relative / "components" / "redis-sentinel")],
            }
        )
    )
    return tmp


def load(text: str) -> Objects:
    return [o for o in yaml.safe_load_all(text) if o]


@pytest.fixture(scope="session")
def base_text() -> str:
    return kustomize(K8S_DIR)


@pytest.fixture(scope="session")
def base(base_text: str) -> Objects:
    """Every object of `kubectl apply -k deploy/k8s`."""
    return load(base_text)


@pytest.fixture(scope="session")
def sentinel_text(tmp_path_factory: pytest.TempPathFactory) -> str:
    return kustomize(with_sentinel(tmp_path_factory.mktemp("overlay")))


@pytest.fixture(scope="session")
def sentinel(sentinel_text: str) -> Objects:
    """Every object of the base with the Redis Sentinel component."""
    return load(sentinel_text)


def of_kind(objects: Objects, kind: str) -> dict[str, dict[str, Any]]:
    """The objects of one kind, by name."""
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def config_map(objects: Objects, prefix: str) -> dict[str, Any]:
    """The ConfigMap generated as prefix (kustomize appends a content hash to the name)."""
    (found,) = [
        o
        for o in objects
        if o["kind"] == "ConfigMap"
        and (o["metadata"]["name"] == prefix or o["metadata"]["name"].startswith(f"{prefix}-"))
    ]
    return found


def pod_templates(objects: Objects) -> dict[str, dict[str, Any]]:
    """Each workload's pod template, by workload name."""
    return {
        o["metadata"]["name"]: o["spec"]["template"]
        for o in objects
        if o["kind"] in {"Deployment", "StatefulSet"}
    }
