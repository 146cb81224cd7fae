"""What the rendered objects promise: sandboxed pods, probes, Secret references only, one
image, NetworkPolicies that keep the data plane private, and names and ports that agree with
the Envoy config the cluster runs (as tests/unit/test_compose.py checks for docker-compose)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from llmproxy.common.contract import SERVICES
from llmproxy.config import load_config
from llmproxy.k8sconf.objects import (
    ENVOY,
    ENVOY_INTERNAL,
    IMAGE,
    LLMPROXY_UID,
    SECRET,
    TMP_DIR,
)
from llmproxy.k8sconf.secrets import all_refs
from tests.unit.k8s.conftest import ROOT, Objects, config_map, of_kind, pod_templates

CONFIG = load_config(ROOT / "deploy" / "llmproxy.yaml", environ={})
DOCS = ROOT / "docs" / "kubernetes.md"


def containers(template: dict[str, Any]) -> list[dict[str, Any]]:
    spec = template["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def envoy_bootstrap(objects: Objects) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(config_map(objects, "envoy-config")["data"]["envoy.yaml"])
    return data


# --- pods ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["base", "sentinel"])
def test_every_pod_is_sandboxed(variant: str, request: pytest.FixtureRequest) -> None:
    objects: Objects = request.getfixturevalue(variant)
    for name, template in pod_templates(objects).items():
        spec = template["spec"]
        assert spec["automountServiceAccountToken"] is False, name
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert pod["runAsUser"] == LLMPROXY_UID, name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for container in containers(template):
            where = f"{name}/{container['name']}"
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["capabilities"] == {"drop": ["ALL"]}, where
            assert security["runAsNonRoot"] is True, where
            resources = container["resources"]
            assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}
            # Whatever a container may write to is an emptyDir or a claim, never the image.
            volumes = {v["name"]: v for v in spec["volumes"]}
            claims = {c["metadata"]["name"] for c in _claims(objects, name)}
            for mount in container.get("volumeMounts", []):
                if not mount.get("readOnly"):
                    assert mount["name"] in claims or "emptyDir" in volumes[mount["name"]], where


def _claims(objects: Objects, workload: str) -> list[dict[str, Any]]:
    sets = of_kind(objects, "StatefulSet")
    return sets[workload]["spec"].get("volumeClaimTemplates", []) if workload in sets else []


def test_llmproxy_processes_have_a_writable_tmp(base: Objects) -> None:
    for name in [*SERVICES, ENVOY]:
        (container,) = pod_templates(base)[name]["spec"]["containers"]
        assert {"name": "tmp", "mountPath": TMP_DIR, "readOnly": False} in container["volumeMounts"]


@pytest.mark.parametrize("name", SERVICES)
def test_services_have_native_grpc_probes_on_their_grpc_port(base: Objects, name: str) -> None:
    (container,) = pod_templates(base)[name]["spec"]["containers"]
    port = getattr(CONFIG.services, name).grpc_port
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"] == {"port": port}, probe


@pytest.mark.parametrize("name", SERVICES)
def test_replicas_are_the_configured_instances(base: Objects, name: str) -> None:
    assert of_kind(base, "Deployment")[name]["spec"]["replicas"] == (
        getattr(CONFIG.services, name).instances
    )


def test_every_deployment_has_a_disruption_budget_and_autoscalers_target_deployments(
    base: Objects,
) -> None:
    deployments = of_kind(base, "Deployment")
    budgets = of_kind(base, "PodDisruptionBudget")
    assert set(budgets) == set(deployments)
    for name, budget in budgets.items():
        labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        assert selects(budget["spec"]["selector"]["matchLabels"], labels)
    for name, hpa in of_kind(base, "HorizontalPodAutoscaler").items():
        assert hpa["apiVersion"] == "autoscaling/v2"
        target = hpa["spec"]["scaleTargetRef"]
        assert (target["kind"], target["name"]) == ("Deployment", name)
        assert hpa["spec"]["minReplicas"] == deployments[name]["spec"]["replicas"]


# --- secrets ------------------------------------------------------------------------------------


def test_secrets_are_references_only(base: Objects, sentinel: Objects) -> None:
    assert not of_kind(base, "Secret")
    assert not of_kind(sentinel, "Secret")
    secret_envs = {ref.env for ref in all_refs(CONFIG)}
    for name, template in pod_templates(base).items():
        for container in containers(template):
            for entry in container.get("env", []):
                if entry["name"] in secret_envs:
                    assert "value" not in entry, (name, entry["name"])
                    assert entry["valueFrom"]["secretKeyRef"]["name"] == SECRET


def test_the_docs_create_every_secret_key() -> None:
    docs = DOCS.read_text()
    assert f"kubectl -n llmproxy create secret generic {SECRET}" in docs
    for ref in all_refs(CONFIG):
        assert f"--from-literal={ref.key}=" in docs, ref.key


def test_provider_keys_reach_only_what_calls_providers(base: Objects) -> None:
    keys = {p.api_key_env for p in CONFIG.providers} - {None}
    for name, template in pod_templates(base).items():
        passed = {e["name"] for c in containers(template) for e in c.get("env", [])} & keys
        assert passed == (keys if name in {"router", "health"} else set()), name


# --- one image ----------------------------------------------------------------------------------


def test_every_llmproxy_pod_runs_the_compose_image(base: Objects) -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    built = {s["image"] for s in compose.values() if "build" in s}
    assert built == {IMAGE}
    for name in [*SERVICES, ENVOY]:
        (container,) = pod_templates(base)[name]["spec"]["containers"]
        assert container["image"] == IMAGE, name
    redis = {s["image"] for s in compose.values() if "build" not in s and "redis" in s["image"]}
    for name, template in pod_templates(base).items():
        for container in containers(template):
            assert container["image"] in {IMAGE, *redis}, name


# --- names and ports against Envoy's config ------------------------------------------------------


@pytest.mark.parametrize("name", SERVICES)
def test_envoy_clusters_resolve_headless_services_of_the_right_pods(
    base: Objects, name: str
) -> None:
    clusters = {c["name"]: c for c in envoy_bootstrap(base)["static_resources"]["clusters"]}
    cluster = clusters[f"llmproxy_{name}"]
    assert cluster["type"] == "STRICT_DNS"
    (endpoint,) = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    address = endpoint["endpoint"]["address"]["socket_address"]
    service = of_kind(base, "Service")[address["address"]]
    assert service["spec"]["clusterIP"] == "None"  # every pod's address, not a virtual IP
    ports = {p["port"]: p for p in service["spec"]["ports"]}
    assert address["port_value"] in ports
    assert ports[address["port_value"]]["name"] == "grpc"
    deployment = of_kind(base, "Deployment")[name]
    template = deployment["spec"]["template"]
    assert selects(service["spec"]["selector"], template["metadata"]["labels"])
    (container,) = template["spec"]["containers"]
    assert container["command"][:3] == ["python", "-m", f"llmproxy.{name}"]
    assert {"name": "grpc", "containerPort": address["port_value"], "protocol": "TCP"} in (
        container["ports"]
    )


def test_envoy_listens_on_its_container_ports_and_exposes_only_the_client_listener(
    base: Objects,
) -> None:
    bootstrap = envoy_bootstrap(base)
    listening = [bootstrap["admin"]["address"]["socket_address"]] + [
        listener["address"]["socket_address"]
        for listener in bootstrap["static_resources"]["listeners"]
    ]
    assert {a["address"] for a in listening} == {"0.0.0.0"}
    (container,) = pod_templates(base)[ENVOY]["spec"]["containers"]
    assert {p["containerPort"] for p in container["ports"]} == {a["port_value"] for a in listening}
    services = of_kind(base, "Service")
    envoy = CONFIG.envoy
    assert [p["port"] for p in services[ENVOY]["spec"]["ports"]] == [envoy.listener_port]
    assert {p["port"] for p in services[ENVOY_INTERNAL]["spec"]["ports"]} == {
        envoy.control_port,
        envoy.egress_port,
        envoy.admin_port,
    }
    # Services reach Envoy (egress, control, admin) at the internal Service.
    pods = yaml.safe_load(config_map(base, "llmproxy-config")["data"]["llmproxy.yaml"])
    assert pods["envoy"]["host"] == ENVOY_INTERNAL


def test_envoy_runs_the_mounted_config_with_a_node_id_per_replica(base: Objects) -> None:
    template = pod_templates(base)[ENVOY]
    (container,) = template["spec"]["containers"]
    command = container["command"]
    path = command[command.index("-c") + 1]
    (mount,) = [m for m in container["volumeMounts"] if path.startswith(m["mountPath"] + "/")]
    (volume,) = [v for v in template["spec"]["volumes"] if v["name"] == mount["name"]]
    assert volume["configMap"]["name"] == config_map(base, "envoy-config")["metadata"]["name"]
    assert command[command.index("--service-node") + 1] == "$(POD_NAME)"


# --- network policies ----------------------------------------------------------------------------


def admitted(objects: Objects, pod_labels: dict[str, str], port: int) -> list[list[Any] | None]:
    """The `from` of every rule admitting traffic to port on pods labelled pod_labels."""
    found: list[list[Any] | None] = []
    for policy in of_kind(objects, "NetworkPolicy").values():
        if not selects(policy["spec"]["podSelector"].get("matchLabels", {}), pod_labels):
            continue
        for rule in policy["spec"].get("ingress", []):
            if any(p["port"] == port for p in rule.get("ports", [])):
                found.append(rule.get("from"))
    return found


def test_every_pod_is_denied_by_default(base: Objects) -> None:
    denies = [
        p
        for p in of_kind(base, "NetworkPolicy").values()
        if p["spec"]["podSelector"] == {} and not p["spec"].get("ingress")
    ]
    assert denies
    assert denies[0]["spec"]["policyTypes"] == ["Ingress"]


@pytest.mark.parametrize("name", SERVICES)
def test_only_envoy_and_the_services_reach_a_grpc_port(base: Objects, name: str) -> None:
    labels = pod_templates(base)[name]["metadata"]["labels"]
    settings = getattr(CONFIG.services, name)
    (sources,) = admitted(base, labels, settings.grpc_port)
    assert sources is not None
    components = {s["podSelector"]["matchLabels"]["app.kubernetes.io/component"] for s in sources}
    assert components == {"envoy", "service"}
    (metrics,) = admitted(base, labels, settings.metrics_port)
    assert metrics == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    ]


def test_only_the_client_listener_is_public(base: Objects) -> None:
    labels = pod_templates(base)[ENVOY]["metadata"]["labels"]
    envoy = CONFIG.envoy
    assert admitted(base, labels, envoy.listener_port) == [None]  # from anywhere
    for port in (envoy.control_port, envoy.egress_port, envoy.admin_port):
        (sources,) = admitted(base, labels, port)
        assert sources, port
        assert all("podSelector" in s or "namespaceSelector" in s for s in sources)
