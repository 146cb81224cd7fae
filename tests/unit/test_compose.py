"""docker-compose.yml and the Dockerfile agree with the configuration Envoy is generated from.

No Docker engine is needed: the compose file is read with PyYAML and the configuration each
container would load is rebuilt with `load_config(environ=<that container's environment>)`.
Only the last test asks `docker compose` itself, and it skips without an engine.
"""

from __future__ import annotations

import importlib
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from llmproxy.common.contract import SERVICES
from llmproxy.common.descriptors import descriptor_set
from llmproxy.config import StackConfig, load_config
from llmproxy.envoyconf.build import build_bootstrap, write

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
CONFIG_FILE = ROOT / "deploy" / "llmproxy.yaml"
IMAGE_CONFIG = "/app/deploy/llmproxy.yaml"  # where the Dockerfile puts CONFIG_FILE
IMAGE_DEPLOY = "/app/deploy/"
ENVOY = str(Path(sys.executable).parent / "envoy")
ANY_ADDRESS = "0.0.0.0"

Compose = dict[str, Any]


@pytest.fixture(scope="module")
def compose() -> Compose:
    """The compose file's services, anchors and merge keys resolved."""
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict)
    services = data["services"]
    assert isinstance(services, dict)
    return services


@pytest.fixture(scope="module")
def defaults() -> StackConfig:
    """The shipped configuration with no overrides: the ports every container must keep."""
    return load_config(CONFIG_FILE, environ={})


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as the process sees it (compose accepts a mapping or a list)."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) if "=" in item else (item, "") for item in raw)
    return {
        name: "" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
        for name, value in raw.items()
    }


def config_of(compose: Compose, name: str) -> StackConfig:
    """The configuration the llmproxy process in container `name` loads.

    A path into the image's /app/deploy/ is read from the repository's deploy/, which the
    Dockerfile copies there (test_the_image_holds_the_files_the_containers_name checks so).
    """
    environ = {
        key: value.replace(IMAGE_DEPLOY, f"{ROOT / 'deploy'}/", 1)
        if value.startswith(IMAGE_DEPLOY)
        else value
        for key, value in environment(compose[name]).items()
    }
    return load_config(CONFIG_FILE, environ=environ)


def command(service: dict[str, Any]) -> list[str]:
    raw = service["command"]
    return shlex.split(raw) if isinstance(raw, str) else [str(part) for part in raw]


def published(service: dict[str, Any]) -> dict[int, int]:
    """Container port -> host port of every published port (short or long syntax)."""
    ports = {}
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            ports[int(entry["target"])] = int(entry["published"])
        else:
            *_, host, container = str(entry).split(":")
            ports[int(container)] = int(host)
    return ports


def probed_port(service: dict[str, Any]) -> int:
    """The loopback port a container's healthcheck probes."""
    (port,) = re.findall(r"127\.0\.0\.1:(\d+)", " ".join(service["healthcheck"]["test"]))
    return int(port)


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile; continuations joined, heredoc bodies skipped."""
    instructions: list[tuple[str, str]] = []
    lines = iter(DOCKERFILE.read_text().splitlines())
    for first in lines:
        if not first.strip() or first.lstrip().startswith("#"):
            continue
        line = first
        while line.endswith("\\"):
            line = line[:-1] + " " + next(lines).strip()
        keyword, _, arguments = line.strip().partition(" ")
        instructions.append((keyword.upper(), arguments))
        heredoc = re.search(r"<<-?['\"]?(\w+)['\"]?", arguments)
        if heredoc:
            for body in lines:
                if body.strip() == heredoc.group(1):
                    break
    return instructions


# --- the control-plane services ----------------------------------------------------------------


@pytest.mark.parametrize("name", SERVICES)
def test_every_service_runs_in_its_own_container(compose: Compose, name: str) -> None:
    assert name in compose, f"docker-compose.yml has no service {name!r}"
    argv = command(compose[name])
    assert argv[:3] == ["python", "-m", f"llmproxy.{name}"]
    assert argv[3:] == ["--config", IMAGE_CONFIG]


@pytest.mark.parametrize("name", SERVICES)
def test_a_service_binds_every_interface_and_is_named_after_its_container(
    compose: Compose, defaults: StackConfig, name: str
) -> None:
    settings = getattr(config_of(compose, name).services, name)
    expected = getattr(defaults.services, name)
    assert settings.listen_host == ANY_ADDRESS
    assert settings.host == name
    assert (settings.grpc_port, settings.metrics_port) == (
        expected.grpc_port,
        expected.metrics_port,
    )


def test_every_container_sees_the_same_addresses(compose: Compose) -> None:
    """Where a service is reached must not depend on who asks."""

    def addresses(config: StackConfig) -> dict[str, object]:
        found: dict[str, object] = {
            name: (getattr(config.services, name).host, getattr(config.services, name).grpc_port)
            for name in SERVICES
        }
        found["redis"] = config.redis.url
        found["fakeprovider"] = (config.fake_provider.host, config.fake_provider.port)
        return found

    reference = addresses(config_of(compose, "envoy"))
    for name, service in compose.items():
        if any(key.startswith("LLMPROXY") for key in environment(service)):
            assert addresses(config_of(compose, name)) == reference, name


@pytest.mark.parametrize("name", SERVICES)
def test_a_service_healthcheck_probes_its_grpc_port(
    compose: Compose, defaults: StackConfig, name: str
) -> None:
    assert probed_port(compose[name]) == getattr(defaults.services, name).grpc_port


def test_healthchecks_run_code_that_exists(compose: Compose) -> None:
    """The probes are `python -c` snippets: they must compile and import real names."""
    for name, service in compose.items():
        test = service["healthcheck"]["test"]
        if test[1:3] != ["python", "-c"]:
            continue
        compile(test[3], f"{name} healthcheck", "exec")
        for module, attribute in re.findall(r"from ([\w.]+) import (\w+)", test[3]):
            assert hasattr(importlib.import_module(module), attribute), (name, module, attribute)


def test_containers_start_once_what_they_need_is_healthy(compose: Compose) -> None:
    assert set(compose["envoy"]["depends_on"]) >= set(SERVICES)
    for name, service in compose.items():
        for dependency, condition in service.get("depends_on", {}).items():
            assert condition == {"condition": "service_healthy"}, (name, dependency)
            assert "healthcheck" in compose[dependency], dependency


# --- Envoy -------------------------------------------------------------------------------------


def test_only_envoy_publishes_ports_and_they_are_the_configured_ones(
    compose: Compose, defaults: StackConfig
) -> None:
    publishing = {name for name, service in compose.items() if service.get("ports")}
    # Besides Envoy only the monitoring UIs (tests/unit/test_dashboards_compose.py checks them).
    assert publishing - {"prometheus", "alertmanager", "grafana"} == {"envoy"}
    envoy = defaults.envoy
    expected = {envoy.listener_port, envoy.control_port, envoy.admin_port}
    assert expected == {8080, 8081, 9901}
    assert published(compose["envoy"]) == {port: port for port in expected}


def test_envoy_runs_the_generated_config(compose: Compose, defaults: StackConfig) -> None:
    script = " ".join(command(compose["envoy"]))
    out = re.search(r"python -m llmproxy\.envoyconf --config (\S+) --out (\S+)", script)
    assert out, script
    assert out.group(1) == IMAGE_CONFIG
    assert f"exec envoy -c {out.group(2)}/envoy.yaml" in script
    assert probed_port(compose["envoy"]) == defaults.envoy.admin_port


def test_envoy_listens_on_every_interface(compose: Compose, defaults: StackConfig) -> None:
    bootstrap = build_bootstrap(config_of(compose, "envoy"), b"")
    addresses = [bootstrap["admin"]["address"]] + [
        listener["address"] for listener in bootstrap["static_resources"]["listeners"]
    ]
    envoy = defaults.envoy
    assert [a["socket_address"] for a in addresses] == [
        {"address": ANY_ADDRESS, "port_value": port}
        for port in (envoy.admin_port, envoy.listener_port, envoy.control_port, envoy.egress_port)
    ]


def test_envoy_clusters_point_at_compose_services(compose: Compose, defaults: StackConfig) -> None:
    bootstrap = build_bootstrap(config_of(compose, "envoy"), b"")
    clusters = [
        c for c in bootstrap["static_resources"]["clusters"] if c["name"].startswith("llmproxy_")
    ]
    assert [c["name"] for c in clusters] == [f"llmproxy_{name}" for name in SERVICES]
    for name, cluster in zip(SERVICES, clusters, strict=True):
        (endpoint,) = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
        address = endpoint["endpoint"]["address"]["socket_address"]
        assert address["address"] == name
        assert address["address"] in compose
        assert address["port_value"] == getattr(defaults.services, name).grpc_port


def test_envoy_accepts_the_config_generated_in_its_container(
    compose: Compose, tmp_path: Path
) -> None:
    """Names only work in a DNS cluster: Envoy refuses a STATIC one ('malformed IP address')."""
    descriptor = descriptor_set().SerializeToString(deterministic=True)
    bootstrap = build_bootstrap(config_of(compose, "envoy"), descriptor)
    path = write(tmp_path, bootstrap, descriptor)
    done = subprocess.run(
        [ENVOY, "--mode", "validate", "-c", str(path), "--log-level", "error"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


# --- Redis and the fake provider ---------------------------------------------------------------


def test_redis_is_the_compose_redis(compose: Compose) -> None:
    config = config_of(compose, "envoy")
    url = urlsplit(config.redis.url)
    assert url.hostname in compose
    assert compose[url.hostname]["image"] == "redis:7-alpine"
    assert (url.port or 6379) == 6379  # the redis image's port
    assert not config.redis.managed  # compose runs it, not `make up`


def test_the_cache_has_a_redis_of_its_own(compose: Compose) -> None:
    cache = config_of(compose, "router").services.router.cache
    assert cache.redis_url is not None
    url = urlsplit(cache.redis_url)
    assert url.hostname in compose
    assert url.hostname != urlsplit(config_of(compose, "router").redis.url).hostname
    assert compose[url.hostname]["image"] == "redis:7-alpine"
    assert url.hostname in compose["router"]["depends_on"]


def test_fake_provider_serves_every_configured_model(
    compose: Compose, defaults: StackConfig
) -> None:
    fake = config_of(compose, "router").fake_provider
    assert fake.host in compose
    argv = command(compose[fake.host])
    assert argv[:3] == ["python", "-m", "llmproxy.fakeprovider"]
    flags = dict(zip(argv[3::2], argv[4::2], strict=True))
    assert flags["--host"] == ANY_ADDRESS
    assert int(flags["--port"]) == fake.port == defaults.fake_provider.port
    assert flags["--models"].split(",") == [model.name for model in defaults.models]
    assert probed_port(compose[fake.host]) == fake.port


def test_provider_keys_reach_only_what_calls_providers(
    compose: Compose, defaults: StackConfig
) -> None:
    keys = {p.api_key_env for p in defaults.providers} - {None}
    for name, service in compose.items():
        passed = keys & set(environment(service))
        assert passed == (keys if name in {"router", "health"} else set()), name


# --- the image ---------------------------------------------------------------------------------


def test_dockerfile_installs_the_project() -> None:
    instructions = dockerfile_instructions()
    keywords = [keyword for keyword, _ in instructions]
    assert instructions[0] == ("FROM", "python:3.11-slim")
    assert any(
        k == "RUN" and re.search(r"\bpip install\b[^&;|]* \.(\s|$)", a) for k, a in instructions
    )
    assert ("COPY", f"deploy/llmproxy.yaml {IMAGE_CONFIG}") in instructions
    assert any(k == "ENV" and f"LLMPROXY_CONFIG={IMAGE_CONFIG}" in a for k, a in instructions)
    assert "ENTRYPOINT" not in keywords  # compose picks every container's command
    assert "CMD" in keywords
    (user,) = [a for k, a in instructions if k == "USER"]
    assert user.split(":")[0] not in {"root", "0"}


def test_the_image_holds_the_files_the_containers_name(compose: Compose) -> None:
    """The limits file, read by the rate limiter and by Envoy's generator, is in the image."""
    copied = {a.split()[-1] for k, a in dockerfile_instructions() if k == "COPY"}
    for name in ("ratelimit", "envoy"):
        path = environment(compose[name])["LLMPROXY__SERVICES__RATELIMIT__LIMITS_FILE"]
        assert path in copied, name
        assert (ROOT / "deploy" / path.removeprefix(IMAGE_DEPLOY)).is_file()


def test_dockerignore_keeps_what_the_image_is_built_from() -> None:
    lines = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()]
    assert "*" in lines  # an allow-list: nothing else (.venv, .git, secrets) is sent
    for needed in ("pyproject.toml", "constraints.txt", "services", "deploy"):
        assert f"!{needed}" in lines, needed


@pytest.mark.docker
@pytest.mark.usefixtures("docker_engine")
def test_docker_compose_accepts_the_file() -> None:
    docker = shutil.which("docker")
    assert docker is not None
    plugin = subprocess.run(
        [docker, "compose", "version"], capture_output=True, check=False, timeout=30
    )
    if plugin.returncode != 0:
        pytest.skip("needs the docker compose plugin")
    done = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE_FILE), "config", "-q"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def test_the_router_reaches_envoys_egress_listener_by_name(compose: Compose) -> None:
    router = config_of(compose, "router")
    assert router.envoy.host == "envoy"
    assert router.envoy.host in compose
