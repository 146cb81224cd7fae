"""The edge tier's configuration: what `edge:` accepts, and the Envoy config made from it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmproxy.common.contract import CREDENTIAL_HEADERS
from llmproxy.common.edge_settings import TokenBucket
from llmproxy.common.errors import ConfigError
from llmproxy.config import DEFAULT_CONFIG, StackConfig, load_config
from llmproxy.envoyconf.build import build_bootstrap
from llmproxy.envoyconf.edge import EDGE_LIMIT_HEADER
from tests.harness.configs import stack_config_data, write_config
from tests.unit.test_envoy_config import DESCRIPTOR, http_filters, validate

EDGE = {
    "xff_num_trusted_hops": 1,
    "per_client_ip": {"rate_per_s": 0.5, "burst": 7},
    "per_client_ip_without_credential": {"rate_per_s": 0.001, "burst": 3},
    "per_connection": {"rate_per_s": 2.5, "burst": 9},
    "listener": {"rate_per_s": 300, "burst": 600},
    "max_client_ips": 123,
    "max_connections": 456,
    "max_heap_mb": 256,
    "max_concurrent_streams": 32,
    "max_request_headers_kb": 16,
    "idle_timeout_s": 600,
    "stream_idle_timeout_s": 120,
    "request_headers_timeout_s": 5,
}
BUCKETS = ["per_connection", "per_client_ip_without_credential", "per_client_ip", "listener"]


def config_with(tmp_path: Path, edge: dict[str, Any]) -> StackConfig:
    return write_config(tmp_path, stack_config_data(edge=edge))[1]


def bootstrap(tmp_path: Path) -> dict[str, Any]:
    return build_bootstrap(config_with(tmp_path, EDGE), DESCRIPTOR)


def listener(boot: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [x for x in boot["static_resources"]["listeners"] if x["name"] == name]
    return found


def hcm(boot: dict[str, Any], name: str) -> dict[str, Any]:
    config: dict[str, Any] = listener(boot, name)["filter_chains"][0]["filters"][0]["typed_config"]
    return config


def edge_filters(boot: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name.removeprefix("local_ratelimit."): config
        for name, config in http_filters(boot, "client").items()
        if name.startswith("local_ratelimit.")
    }


@pytest.mark.parametrize(
    ("edge", "environ", "expected"),
    [
        ({"per_client_ip": {"rate_per_s": 0, "burst": 1}}, {}, "edge.per_client_ip.rate_per_s"),
        ({"per_connection": {"rate_per_s": 1, "burst": -5}}, {}, "edge.per_connection.burst"),
        ({"listener": {"rate_per_s": 1, "burst": 0}}, {}, "edge.listener.burst"),
        (
            {"per_client_ip_without_credential": {"rate_per_s": -1, "burst": 1}},
            {},
            "edge.per_client_ip_without_credential.rate_per_s: Input should be greater",
        ),
        ({"per_client_ip": {"rate_per_s": 1}}, {}, "edge.per_client_ip.burst: Field required"),
        ({"per_client_ip": "fast"}, {}, "edge.per_client_ip: Input should be a valid dict"),
        ({"per_ip": {"rate_per_s": 1, "burst": 1}}, {}, "edge.per_ip: Extra inputs"),
        ({"xff_num_trusted_hops": 11}, {}, "edge.xff_num_trusted_hops: Input should be less"),
        ({"xff_num_trusted_hops": -1}, {}, "edge.xff_num_trusted_hops"),
        ({}, {"LLMPROXY__EDGE__XFF_NUM_TRUSTED_HOPS": "99"}, "edge.xff_num_trusted_hops"),
        ({"max_client_ips": 0}, {}, "edge.max_client_ips"),
        ({"max_connections": 0}, {}, "edge.max_connections"),
        ({"max_heap_mb": 0}, {}, "edge.max_heap_mb"),
        ({"max_concurrent_streams": 0}, {}, "edge.max_concurrent_streams"),
        ({"max_requests_per_io_cycle": 0}, {}, "edge.max_requests_per_io_cycle"),
        ({"max_request_headers_kb": 9000}, {}, "edge.max_request_headers_kb"),
        ({"idle_timeout_s": 0}, {}, "edge.idle_timeout_s"),
        ({"stream_idle_timeout_s": -1}, {}, "edge.stream_idle_timeout_s"),
        ({"request_headers_timeout_s": 0}, {}, "edge.request_headers_timeout_s"),
    ],
)
def test_bad_edge_values_name_the_field(
    tmp_path: Path, edge: dict[str, Any], environ: dict[str, str], expected: str
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"edge": edge}))
    with pytest.raises(ConfigError) as raised:
        load_config(path, environ=environ)
    assert expected in str(raised.value)


def test_a_malformed_edge_section_is_a_startup_error_with_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("edge: [per_client_ip]\n")
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "llmproxy.envoyconf", "--config", str(path), "--out", str(out)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 2
    assert "edge: Input should be a valid dictionary" in done.stderr
    assert "Traceback" not in done.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ("rate", "refill", "retry_after"),
    [
        (2000, (2000, 1), 1),
        (2.5, (5, 2), 1),
        (0.5, (1, 2), 2),
        (0.3, (3, 10), 4),
        (0.001, (1, 1000), 1000),
    ],
)
def test_a_rate_becomes_whole_tokens_per_whole_seconds(
    rate: float, refill: tuple[int, int], retry_after: int
) -> None:
    bucket = TokenBucket(rate_per_s=rate, burst=1)
    assert bucket.refill() == refill
    assert bucket.retry_after_s == retry_after


def test_envoy_accepts_an_edge_config(tmp_path: Path) -> None:
    done = validate(tmp_path, config_with(tmp_path, EDGE))
    assert done.returncode == 0, done.stdout + done.stderr


def test_edge_filters_run_first_and_authz_after_them(tmp_path: Path) -> None:
    names = list(http_filters(bootstrap(tmp_path), "client"))
    assert names[:6] == [*(f"local_ratelimit.{b}" for b in BUCKETS), "header_mutation", "ext_authz"]
    assert sum(name.startswith("local_ratelimit") for name in names) == 4


def test_each_bucket_follows_its_settings(tmp_path: Path) -> None:
    filters = edge_filters(bootstrap(tmp_path))
    assert list(filters) == BUCKETS
    for name, config in filters.items():
        assert config["stat_prefix"] == f"edge_{name}"
        for switch in ("filter_enabled", "filter_enforced"):
            assert config[switch]["default_value"] == {"numerator": 100, "denominator": "HUNDRED"}
        assert config["rate_limited_as_resource_exhausted"] is True

    connection = filters["per_connection"]
    assert connection["local_rate_limit_per_downstream_connection"] is True
    assert connection["token_bucket"] == {
        "max_tokens": 9,
        "tokens_per_fill": 5,
        "fill_interval": "2s",
    }
    assert filters["listener"]["token_bucket"] == {
        "max_tokens": 600,
        "tokens_per_fill": 300,
        "fill_interval": "1s",
    }
    assert "descriptors" not in filters["listener"]
    assert "local_rate_limit_per_downstream_connection" not in filters["listener"]


def test_address_buckets_are_dynamic_descriptors_without_a_shared_default(tmp_path: Path) -> None:
    filters = edge_filters(bootstrap(tmp_path))
    per_ip = filters["per_client_ip"]
    assert "token_bucket" not in per_ip  # else every address would also drain one shared bucket
    assert per_ip["max_dynamic_descriptors"] == 123
    assert per_ip["rate_limits"] == [{"actions": [{"remote_address": {}}]}]
    assert per_ip["descriptors"] == [
        {
            "entries": [{"key": "remote_address"}],
            "token_bucket": {"max_tokens": 7, "tokens_per_fill": 1, "fill_interval": "2s"},
        }
    ]

    keyless = filters["per_client_ip_without_credential"]
    assert "token_bucket" not in keyless  # requests with a credential make no descriptor: pass
    assert keyless["max_dynamic_descriptors"] == 123
    (match, address) = keyless["rate_limits"][0]["actions"]
    assert address == {"remote_address": {}}
    headers = match["header_value_match"]["headers"]
    assert headers == [{"name": name, "present_match": False} for name in CREDENTIAL_HEADERS]
    (descriptor,) = keyless["descriptors"]
    assert descriptor["entries"] == [
        {"key": "credential", "value": match["header_value_match"]["descriptor_value"]},
        {"key": "remote_address"},
    ]
    assert descriptor["token_bucket"]["fill_interval"] == "1000s"


def test_refusals_carry_retry_after_and_the_ratelimit_headers(tmp_path: Path) -> None:
    filters = edge_filters(bootstrap(tmp_path))
    headers = {
        name: {h["header"]["key"]: h["header"]["value"] for h in config["response_headers_to_add"]}
        for name, config in filters.items()
    }
    assert headers["per_client_ip"] == {
        "retry-after": "2",
        "x-ratelimit-limit": "7, 1;w=2;burst=7",
        "x-ratelimit-remaining": "0",
        "x-ratelimit-reset": "2",
        EDGE_LIMIT_HEADER: "per_client_ip",
    }
    assert headers["per_client_ip_without_credential"]["retry-after"] == "1000"
    assert headers["listener"]["x-ratelimit-limit"] == "600, 300;w=1;burst=600"


def test_edge_refusals_get_their_own_openai_body_before_the_generic_429(tmp_path: Path) -> None:
    mappers = hcm(bootstrap(tmp_path), "client")["local_reply_config"]["mappers"]
    statuses = [
        m["filter"].get("status_code_filter", {}).get("comparison", {}).get("value", {})
        for m in mappers
    ]
    generic = statuses.index({"default_value": 429, "runtime_key": "unused"})
    (edge,) = [i for i, m in enumerate(mappers) if "extension_filter" in m["filter"]]
    assert edge < generic
    expression = mappers[edge]["filter"]["extension_filter"]["typed_config"]["expression"]
    assert expression == "response.code_details == 'local_rate_limited'"
    error = mappers[edge]["body_format_override"]["json_format"]["error"]
    assert (error["type"], error["code"]) == ("rate_limit_exceeded", "requests")


def test_the_client_connection_manager_bounds_what_clients_hold(tmp_path: Path) -> None:
    client = hcm(bootstrap(tmp_path), "client")
    assert client["use_remote_address"] is True
    assert client["xff_num_trusted_hops"] == 1
    assert client["max_request_headers_kb"] == 16
    assert client["request_headers_timeout"] == "5.0s"
    assert client["stream_idle_timeout"] == "120.0s"
    assert client["request_timeout"] == "300.0s"  # envoy.request_timeout_s
    assert client["common_http_protocol_options"] == {
        "idle_timeout": "600.0s",
        "headers_with_underscores_action": "DROP_HEADER",
    }
    assert client["http2_protocol_options"]["max_concurrent_streams"] == 32
    # The internal listeners keep trusting what they are told: only the client side faces
    # clients.
    for name in ("control", "egress"):
        assert "use_remote_address" not in hcm(bootstrap(tmp_path), name)


def static_runtime(boot: dict[str, Any]) -> dict[str, Any]:
    (layer,) = [x for x in boot["layered_runtime"]["layers"] if x["name"] == "static"]
    return dict(layer["static_layer"])


def test_a_connection_gets_a_bounded_share_of_each_event_loop_turn(tmp_path: Path) -> None:
    assert static_runtime(bootstrap(tmp_path))["http.max_requests_per_io_cycle"] == 1
    several = build_bootstrap(
        config_with(tmp_path, {**EDGE, "max_requests_per_io_cycle": 4}), DESCRIPTOR
    )
    assert static_runtime(several)["http.max_requests_per_io_cycle"] == 4
    unbounded = build_bootstrap(
        config_with(tmp_path, {**EDGE, "max_requests_per_io_cycle": None}), DESCRIPTOR
    )
    assert "http.max_requests_per_io_cycle" not in static_runtime(unbounded)


def test_overload_manager_and_the_connection_limit_are_the_clients(tmp_path: Path) -> None:
    boot = bootstrap(tmp_path)
    overload = boot["overload_manager"]
    monitors = {m["name"]: m["typed_config"] for m in overload["resource_monitors"]}
    assert monitors["envoy.resource_monitors.fixed_heap"]["max_heap_size_bytes"] == 256 << 20
    connections = monitors["envoy.resource_monitors.global_downstream_max_connections"]
    assert connections["max_active_downstream_connections"] == 456
    actions = {a["name"]: a["triggers"] for a in overload["actions"]}
    assert actions == {
        "envoy.overload_actions.shrink_heap": [
            {"name": "envoy.resource_monitors.fixed_heap", "threshold": {"value": 0.95}}
        ],
        "envoy.overload_actions.stop_accepting_requests": [
            {"name": "envoy.resource_monitors.fixed_heap", "threshold": {"value": 0.98}}
        ],
    }
    assert boot["admin"]["ignore_global_conn_limit"] is True
    assert listener(boot, "control")["ignore_global_conn_limit"] is True
    assert listener(boot, "egress")["ignore_global_conn_limit"] is True
    assert "ignore_global_conn_limit" not in listener(boot, "client")


def test_shipped_defaults_are_generous_but_strict_without_a_credential() -> None:
    edge = load_config(DEFAULT_CONFIG, environ={}).edge
    assert edge == type(edge)()  # deploy/llmproxy.yaml shows the defaults
    assert edge.xff_num_trusted_hops == 0
    assert edge.per_client_ip.burst >= 1000
    assert edge.per_client_ip_without_credential.burst < edge.per_client_ip.burst
    assert edge.per_client_ip_without_credential.rate_per_s < edge.per_client_ip.rate_per_s
