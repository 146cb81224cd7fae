"""The stack configuration: defaults, environment overrides, and clear errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from llmproxy.common.errors import ConfigError
from llmproxy.config import DEFAULT_CONFIG, load_config


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_shipped_config_is_valid() -> None:
    config = load_config(DEFAULT_CONFIG, environ={})
    assert config.envoy.listener_port == 8080
    assert config.envoy.admin_port == 9901
    assert config.services.router.grpc_port == 50051


def test_environment_overrides_keep_types() -> None:
    config = load_config(
        DEFAULT_CONFIG,
        environ={
            "LLMPROXY__ENVOY__LISTENER_PORT": "8088",
            "LLMPROXY__REDIS__MANAGED": "false",
            "LLMPROXY__SERVICES__ROUTER__BIND_HOST": "0.0.0.0",
            "LLMPROXY__LOG_LEVEL": "DEBUG",
        },
    )
    assert config.envoy.listener_port == 8088
    assert config.redis.managed is False
    assert config.services.router.listen_host == "0.0.0.0"
    assert config.services.router.host == "127.0.0.1"
    assert config.log_level == "DEBUG"


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    config = load_config(path, environ={})
    assert config.services.fault.grpc_port == 50055
    assert config.models == []


@pytest.mark.parametrize(
    ("data", "environ", "expected"),
    [
        ({"envoy": {"listener_port": 70000}}, {}, "envoy.listener_port: Input should be less"),
        ({"envoy": {"listener_port": "x"}}, {}, "envoy.listener_port: Input should be a valid"),
        ({"envoy": {"listnr_port": 1}}, {}, "envoy.listnr_port: Extra inputs are not permitted"),
        ({}, {"LLMPROXY__SERVICES__ROUTER__GRPC_PORT": "-1"}, "services.router.grpc_port"),
        ({"redis": {"url": "http://x"}}, {}, "redis.url: String should match pattern"),
        ({"log_level": "LOUD"}, {}, "log_level"),
        (
            {"providers": [{"name": "a", "base_url": "ftp://x"}]},
            {},
            "providers.0.base_url",
        ),
        (
            {"providers": [{"name": "a", "kind": "azure", "base_url": "https://x"}]},
            {},
            "providers.0.api_version: kind 'azure' needs an api_version",
        ),
        (
            {
                "providers": [
                    {"name": "a", "kind": "gemini", "base_url": "https://x", "api_version": "1"}
                ]
            },
            {},
            "providers.0.api_version: only kind 'azure' takes an api_version, not kind 'gemini'",
        ),
        (
            {
                "providers": [{"name": "a", "base_url": "http://x"}],
                "models": [{"name": "m", "targets": [{"provider": "b", "model": "x"}]}],
            },
            {},
            "targets unknown provider 'b'",
        ),
        (
            {
                "providers": [
                    {"name": "a", "base_url": "http://x"},
                    {"name": "a", "base_url": "http://y"},
                ]
            },
            {},
            "duplicate names ['a']",
        ),
        ({"models": [{"name": "m", "targets": []}]}, {}, "models.0.targets"),
    ],
)
def test_invalid_values_name_the_field(
    tmp_path: Path, data: object, environ: dict[str, str], expected: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(write(tmp_path, data), environ=environ)
    assert expected in str(raised.value)


def test_not_yaml_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("envoy: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path, environ={})


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(write(tmp_path, [1, 2]), environ={})


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read configuration"):
        load_config(tmp_path / "absent.yaml", environ={})


def test_override_through_a_scalar_is_refused() -> None:
    with pytest.raises(ConfigError, match="does not name a nested field"):
        load_config(DEFAULT_CONFIG, environ={"LLMPROXY__LOG_LEVEL__X": "1"})


def test_demo_mode_routes_every_model_to_the_fake_provider() -> None:
    config = load_config(DEFAULT_CONFIG, environ={})
    assert config.demo_mode({})
    table = config.routing_table({})
    assert set(table) == {m.name for m in config.models}
    assert all(t.provider == "demo" for targets in table.values() for t in targets)
    (endpoint,) = config.provider_endpoints({})
    assert endpoint.base_url == f"http://127.0.0.1:{config.fake_provider.port}/v1"


def test_a_key_enables_its_provider_and_only_its_models() -> None:
    config = load_config(DEFAULT_CONFIG, environ={})
    environ = {"OPENAI_API_KEY": "sk-test"}
    assert not config.demo_mode(environ)
    assert [p.name for p in config.provider_endpoints(environ)] == ["openai"]
    table = config.routing_table(environ)
    assert list(table) == ["gpt-4o-mini", "text-embedding-3-small"]
    assert table["gpt-4o-mini"][0].provider == "openai"


def test_keyless_provider_is_always_enabled(tmp_path: Path) -> None:
    data = {
        "providers": [
            {"name": "vllm", "base_url": "http://127.0.0.1:8000/v1/", "api_key_env": None}
        ],
        "models": [{"name": "llama", "targets": [{"provider": "vllm", "model": "meta/llama"}]}],
    }
    config = load_config(write(tmp_path, data), environ={})
    assert not config.demo_mode({})
    assert config.providers[0].base_url == "http://127.0.0.1:8000/v1"


@pytest.mark.parametrize("service", ["router", "fault"])
def test_no_instances_is_refused_naming_the_field(tmp_path: Path, service: str) -> None:
    with pytest.raises(ConfigError, match=rf"services\.{service}\.instances: Input should be"):
        load_config(write(tmp_path, {"services": {service: {"instances": 0}}}), environ={})


def test_instance_port_ranges_that_collide_are_refused_naming_both(tmp_path: Path) -> None:
    # Two authz instances one port apart: the second lands on the health service's port.
    data = {
        "services": {
            "authz": {"grpc_port": 50053, "instances": 2, "port_step": 1},
            "health": {"grpc_port": 50054},
        }
    }
    with pytest.raises(ConfigError) as raised:
        load_config(write(tmp_path, data), environ={})
    message = str(raised.value)
    assert (
        "services.health.grpc_port: port 50054 is also services.authz (instance 1).grpc_port"
        in message
    )


def test_a_range_running_into_an_envoy_port_is_refused(tmp_path: Path) -> None:
    data = {"envoy": {"admin_port": 50071}, "services": {"router": {"instances": 3}}}
    with pytest.raises(
        ConfigError, match=r"services\.router \(instance 2\)\.grpc_port: port 50071"
    ):
        load_config(write(tmp_path, data), environ={})


def test_an_instance_beyond_the_configured_ones_exits_2_naming_the_field(tmp_path: Path) -> None:
    path = write(tmp_path, {"services": {"router": {"instances": 2}}})
    done = subprocess.run(
        [sys.executable, "-m", "llmproxy.router", "--config", str(path), "--instance", "5"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "services.router.instances is 2: there is no instance 5 (0..1)" in done.stderr
    assert "Traceback" not in done.stderr


def _routed(routing: object, *weights: object) -> dict[str, object]:
    """A config with one model over two providers, with routing and target weights as given."""
    targets: list[dict[str, object]] = [{"provider": p, "model": "x"} for p in ("a", "b")]
    for target, weight in zip(targets, weights, strict=False):
        target["weight"] = weight
    model: dict[str, object] = {"name": "m", "targets": targets}
    if routing is not None:
        model["routing"] = routing
    providers = [{"name": p, "base_url": f"http://{p}"} for p in ("a", "b")]
    return {"providers": providers, "models": [model]}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (_routed("fastest"), "models.0.routing: Input should be 'ordered', 'weighted'"),
        (_routed(None, None, 2), "targets[1].weight: weights apply only with routing: weighted"),
        (_routed("least-busy", 1), "targets[0].weight: weights apply only with routing: weighted"),
        (_routed("weighted", 0, 0), "targets[].weight: every weight of model 'm' is 0"),
        (_routed("weighted", 1, -1), "models.0.targets.1.weight: Input should be greater than"),
        (
            _routed("weighted", 1, float("inf")),
            "models.0.targets.1.weight: Input should be a finite",
        ),
    ],
)
def test_bad_routing_is_refused_naming_the_field(
    tmp_path: Path, data: object, expected: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(write(tmp_path, data), environ={})
    assert expected in str(raised.value)


@pytest.mark.parametrize(
    ("routing", "weights"),
    [("weighted", (3, 1)), ("weighted", (1, 0)), ("weighted", ()), ("least-latency", ())],
)
def test_good_routing_is_taken(tmp_path: Path, routing: str, weights: tuple[int, ...]) -> None:
    config = load_config(write(tmp_path, _routed(routing, *weights)), environ={})
    assert config.models[0].routing == routing
    assert [t.weight for t in config.models[0].targets][: len(weights)] == list(weights)


def test_bedrock_needs_a_region_and_derives_its_url(tmp_path: Path) -> None:
    provider = {"name": "br", "kind": "bedrock"}
    with pytest.raises(ConfigError, match=r"providers\.0\.region: a bedrock provider needs"):
        load_config(write(tmp_path, {"providers": [provider]}), environ={})
    config = load_config(
        write(tmp_path, {"providers": [{**provider, "region": "eu-west-1"}]}), environ={}
    )
    assert config.providers[0].base_url == "https://bedrock-runtime.eu-west-1.amazonaws.com"


def test_region_is_refused_on_other_kinds(tmp_path: Path) -> None:
    provider = {"name": "o", "base_url": "https://api.example/v1", "region": "eu-west-1"}
    with pytest.raises(ConfigError, match=r"providers\.0\.region: only bedrock providers"):
        load_config(write(tmp_path, {"providers": [provider]}), environ={})


def test_bedrock_refuses_an_api_key_env(tmp_path: Path) -> None:
    provider = {"name": "br", "kind": "bedrock", "region": "eu-west-1", "api_key_env": "K"}
    with pytest.raises(ConfigError, match=r"providers\.0\.api_key_env: bedrock signs"):
        load_config(write(tmp_path, {"providers": [provider]}), environ={})


@pytest.mark.parametrize(
    ("environ", "enabled"),
    [
        ({}, False),
        ({"AWS_ACCESS_KEY_ID": "a"}, False),
        ({"AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "s"}, True),
        ({"AWS_PROFILE": "prod"}, True),
        ({"AWS_WEB_IDENTITY_TOKEN_FILE": "/t", "AWS_ROLE_ARN": "arn"}, True),
        ({"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/creds"}, True),
    ],
)
def test_bedrock_is_enabled_by_aws_credentials(
    tmp_path: Path, environ: dict[str, str], enabled: bool
) -> None:
    data = {
        "providers": [{"name": "br", "kind": "bedrock", "region": "eu-west-1"}],
        "models": [{"name": "claude", "targets": [{"provider": "br", "model": "m"}]}],
    }
    config = load_config(write(tmp_path, data), environ=environ)
    assert [p.name for p in config.enabled_providers(environ)] == (["br"] if enabled else [])
