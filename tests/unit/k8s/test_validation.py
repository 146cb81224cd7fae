"""The manifests validate offline: every built-in object against Kubernetes' own schema
(kubernetes-validate), the Prometheus Operator objects by their structure and promtool, the
Envoy config by Envoy, and checkov finds nothing but the findings docs/kubernetes.md accepts.

checkov runs from its own venv (.tools/checkov, made by scripts/bootstrap.sh): its dependencies
conflict with the project's pins.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from llmproxy.k8sconf.monitoring import rule_groups
from llmproxy.obsconf.prometheus import RULES_DIR
from tests.unit.k8s.conftest import ROOT, Objects, config_map, of_kind

# The oldest Kubernetes the manifests are for (native gRPC probes are GA from 1.27) and a
# current one; kubernetes-validate ships both schemas.
KUBERNETES_VERSIONS = ("1.27.0", "1.32.0")
CRD_KINDS = {"PrometheusRule", "ServiceMonitor"}
CHECKOV = ROOT / ".tools" / "checkov" / "bin" / "checkov"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"
ENVOY = str(Path(sys.executable).parent / "envoy")
DOCS = ROOT / "docs" / "kubernetes.md"
# checkov checks that fail on purpose; docs/kubernetes.md says why for each.
ACCEPTED_CHECKS = {
    "CKV_K8S_35",  # secrets as environment variables: the services read them from there
    "CKV_K8S_43",  # image digests: the tag is set per deployment with kustomize's `images:`
}


def built_in(objects: Objects) -> Objects:
    return [o for o in objects if o["kind"] not in CRD_KINDS]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("variant", ["base", "sentinel"])
def test_every_object_validates_against_the_kubernetes_schema(
    variant: str, version: str, request: pytest.FixtureRequest
) -> None:
    objects: Objects = request.getfixturevalue(variant)
    errors = []
    for item in built_in(objects):
        try:
            kubernetes_validate.validate(item, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{item['kind']}/{item['metadata']['name']}: {exc.message}")
    assert not errors, "\n".join(errors)


def test_the_schema_check_can_fail(base: Objects) -> None:
    deployment = copy.deepcopy(of_kind(base, "Deployment")["router"])
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"] = {
        "port": "grpc"  # a gRPC probe takes a number, not a port name
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)
    deployment["spec"]["template"]["spec"]["hostNetwork"] = "yes"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)


def test_only_the_operator_kinds_lack_a_built_in_schema(base: Objects) -> None:
    missing = set()
    for item in base:
        try:
            kubernetes_validate.validate(item, KUBERNETES_VERSIONS[0], strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            missing.add(item["kind"])
    assert missing == CRD_KINDS


# --- the Prometheus Operator's objects: no schema ships with Kubernetes, so their structure is
# checked against what the operator reads, and the rules by promtool.


def test_the_prometheus_rule_holds_the_rule_files_and_promtool_accepts_it(
    base: Objects, tmp_path: Path
) -> None:
    (rule,) = of_kind(base, "PrometheusRule").values()
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(rule["spec"]) == {"groups"}
    assert rule["spec"]["groups"] == rule_groups(RULES_DIR)
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    done = subprocess.run(
        [PROMTOOL, "check", "rules", str(rules)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


ENDPOINT_FIELDS = {"port", "path", "interval", "relabelings"}


def test_service_monitors_select_services_with_the_ports_they_scrape(base: Objects) -> None:
    monitors = of_kind(base, "ServiceMonitor")
    assert monitors
    services = of_kind(base, "Service")
    for name, monitor in monitors.items():
        assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
        spec = monitor["spec"]
        assert set(spec) <= {"jobLabel", "selector", "endpoints"}, name
        selected = [
            s
            for s in services.values()
            if all(
                s["metadata"]["labels"].get(k) == v
                for k, v in spec["selector"]["matchLabels"].items()
            )
        ]
        for endpoint in spec["endpoints"]:
            assert set(endpoint) <= ENDPOINT_FIELDS, name
            assert endpoint["path"].startswith("/")
            having = [
                s for s in selected if endpoint["port"] in {p["name"] for p in s["spec"]["ports"]}
            ]
            assert having, f"{name}: no selected Service has a port named {endpoint['port']}"
            for service in having:
                assert spec["jobLabel"] in service["metadata"]["labels"], name
            for relabel in endpoint["relabelings"]:
                assert set(relabel) == {"sourceLabels", "targetLabel"}


def test_the_dashboards_are_the_grafana_files(base: Objects) -> None:
    dashboards = config_map(base, "llmproxy-dashboards")
    assert dashboards["metadata"]["labels"]["grafana_dashboard"] == "1"
    files = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
    assert dashboards["data"] == {p.name: p.read_text() for p in files}
    for text in dashboards["data"].values():
        json.loads(text)


# --- Envoy and checkov --------------------------------------------------------------------------


def test_envoy_accepts_the_cluster_config(base: Objects, tmp_path: Path) -> None:
    path = tmp_path / "envoy.yaml"
    path.write_text(config_map(base, "envoy-config")["data"]["envoy.yaml"])
    done = subprocess.run(
        [ENVOY, "--mode", "validate", "-c", str(path), "--log-level", "error"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def checkov_failures(manifest: Path) -> list[dict[str, Any]]:
    """checkov's failed checks on a rendered manifest, offline (no download, no guidelines)."""
    assert CHECKOV.exists(), f"{CHECKOV} is missing: run scripts/bootstrap.sh"
    done = subprocess.run(
        [
            str(CHECKOV),
            "--file",
            str(manifest),
            "--framework",
            "kubernetes",
            "--skip-download",
            "--output",
            "json",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        cwd=manifest.parent,
        env={"PATH": "/usr/bin:/bin", "HOME": str(manifest.parent), "BC_SKIP_MAPPING": "TRUE"},
    )
    # 1: some check failed; anything else but 0 is checkov itself failing.
    assert done.returncode in {0, 1}, done.stdout + done.stderr
    report = json.loads(done.stdout)
    reports = report if isinstance(report, list) else [report]
    assert all(r["check_type"] == "kubernetes" for r in reports)
    assert sum(r["summary"]["passed"] for r in reports) > 0
    failed: list[dict[str, Any]] = [f for r in reports for f in r["results"]["failed_checks"]]
    return failed


@pytest.mark.parametrize("variant", ["base_text", "sentinel_text"])
def test_checkov_finds_nothing_but_the_accepted_findings(
    variant: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(request.getfixturevalue(variant))
    # Without a Prisma Cloud key checkov reports no severities, so every failed check counts,
    # whatever its severity, unless it is accepted in the docs.
    unexpected = sorted(
        {
            f"{f['check_id']} {f['check_name']}: {f['resource']}"
            for f in checkov_failures(manifest)
            if f["check_id"] not in ACCEPTED_CHECKS
        }
    )
    assert not unexpected, "\n".join(unexpected)


def test_checkov_fails_a_privileged_pod(tmp_path: Path, base: Objects) -> None:
    deployment = copy.deepcopy(of_kind(base, "Deployment")["router"])
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"].update(privileged=True, readOnlyRootFilesystem=False)
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(yaml.safe_dump(deployment))
    failed = {f["check_id"] for f in checkov_failures(manifest)}
    assert {"CKV_K8S_16", "CKV_K8S_22"} <= failed  # privileged; read-only root filesystem


def test_every_accepted_finding_is_explained_in_the_docs() -> None:
    docs = DOCS.read_text()
    for check in ACCEPTED_CHECKS:
        assert check in docs, check
