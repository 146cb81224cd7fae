"""deploy/k8s is what the generator makes of deploy/llmproxy.yaml, and bad input is refused."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from llmproxy.config import load_config
from llmproxy.k8sconf.build import build_files, read_inputs, write
from llmproxy.k8sconf.objects import ENVOY_INTERNAL, LIMITS_FILE
from tests.unit.k8s.conftest import K8S_DIR, ROOT, kustomize, of_kind

CONFIG_FILE = ROOT / "deploy" / "llmproxy.yaml"
REGENERATE = "python -m llmproxy.k8sconf --config deploy/llmproxy.yaml --out deploy/k8s"


def differences(committed: Path, generated: Path) -> list[str]:
    """What differs between a committed manifests folder and a freshly generated one."""
    found = []
    want = {p.relative_to(generated) for p in generated.rglob("*") if p.is_file()}
    have = {p.relative_to(committed) for p in committed.rglob("*") if p.is_file()}
    for name in sorted(want - have):
        found.append(f"deploy/k8s/{name} is missing")
    for name in sorted(have - want):
        found.append(f"deploy/k8s/{name} is not generated (added by hand?)")
    for name in sorted(want & have):
        if (committed / name).read_bytes() != (generated / name).read_bytes():
            found.append(f"deploy/k8s/{name} differs from the generated file (edited by hand?)")
    return found


def generate(out: Path, config_file: Path = CONFIG_FILE) -> Path:
    config = load_config(config_file, environ={})
    write(out, build_files(config, read_inputs(config)))
    return out


def test_committed_manifests_are_current(tmp_path: Path) -> None:
    found = differences(K8S_DIR, generate(tmp_path / "k8s"))
    assert not found, "\n".join([*found, f"regenerate them with: {REGENERATE}"])


def test_a_hand_edit_is_caught_and_named(tmp_path: Path) -> None:
    edited = tmp_path / "edited"
    shutil.copytree(K8S_DIR, edited)
    deployments = edited / "deployments.yaml"
    deployments.write_text(deployments.read_text().replace("replicas: 1", "replicas: 7", 1))
    (edited / "extra.yaml").write_text("kind: ConfigMap\n")
    assert differences(edited, generate(tmp_path / "fresh")) == [
        "deploy/k8s/extra.yaml is not generated (added by hand?)",
        "deploy/k8s/deployments.yaml differs from the generated file (edited by hand?)",
    ]


def run_generator(config_file: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmproxy.k8sconf", "--config", str(config_file), "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        cwd=ROOT,
    )


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (
            {"services": {"router": {"grpc_port": 50051, "metrics_port": 9101, "instances": 0}}},
            "services.router.instances",
        ),
        ({"providers": [], "models": []}, "providers"),
    ],
    ids=["no-instances", "no-providers"],
)
def test_a_config_error_exits_2_naming_the_field(
    tmp_path: Path, change: dict[str, object], field: str
) -> None:
    data = yaml.safe_load(CONFIG_FILE.read_text())
    data.update(change)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    done = run_generator(bad, tmp_path / "out")
    assert done.returncode == 2, done.stdout + done.stderr
    assert field in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_the_command_writes_what_is_committed(tmp_path: Path) -> None:
    done = run_generator(CONFIG_FILE, tmp_path / "k8s")
    assert done.returncode == 0, done.stderr
    assert not differences(K8S_DIR, tmp_path / "k8s")


def test_the_pods_config_places_every_service_at_its_service_name() -> None:
    config = load_config(K8S_DIR / "config" / "llmproxy.yaml", environ={})
    shipped = load_config(CONFIG_FILE, environ={})
    for name in ("router", "ratelimit", "authz", "health", "fault"):
        settings, expected = getattr(config.services, name), getattr(shipped.services, name)
        assert (settings.host, settings.listen_host) == (name, "0.0.0.0")
        assert (settings.grpc_port, settings.metrics_port, settings.instances) == (
            expected.grpc_port,
            expected.metrics_port,
            expected.instances,
        )
    assert config.envoy.host == ENVOY_INTERNAL
    assert str(config.services.ratelimit.limits_file) == LIMITS_FILE
    assert not config.redis.managed
    assert (K8S_DIR / "config" / "ratelimit.yaml").read_text() == (
        ROOT / "deploy" / "ratelimit.yaml"
    ).read_text()


def test_replicas_follow_instances_and_envoy_names_each_service_once(tmp_path: Path) -> None:
    data = yaml.safe_load(CONFIG_FILE.read_text())
    data["services"]["router"]["instances"] = 3
    config_file = tmp_path / "llmproxy.yaml"
    config_file.write_text(yaml.safe_dump(data))
    objects = list(yaml.safe_load_all(kustomize(generate(tmp_path / "k8s", config_file))))
    assert of_kind(objects, "Deployment")["router"]["spec"]["replicas"] == 3
    assert of_kind(objects, "HorizontalPodAutoscaler")["router"]["spec"]["minReplicas"] == 3
    envoy = yaml.safe_load((tmp_path / "k8s" / "envoy" / "envoy.yaml").read_text())
    (router,) = [c for c in envoy["static_resources"]["clusters"] if c["name"] == "llmproxy_router"]
    # One DNS name resolving to every pod, not a port per instance.
    (endpoint,) = router["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert endpoint["endpoint"]["address"]["socket_address"] == {
        "address": "router",
        "port_value": 50051,
    }
    pods = load_config(tmp_path / "k8s" / "config" / "llmproxy.yaml", environ={})
    assert pods.services.router.instances == 3  # the rate limiter's fallback divides by it
