"""Envoy's generated configuration: what it wires, and that Envoy itself accepts it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from llmproxy.common.descriptors import descriptor_set
from llmproxy.config import DEFAULT_CONFIG, StackConfig, load_config
from llmproxy.envoyconf.build import build_bootstrap, write
from tests.harness.configs import stack_config_data, write_config

ENVOY = str(Path(sys.executable).parent / "envoy")
DESCRIPTOR = descriptor_set().SerializeToString(deterministic=True)


def http_filters(bootstrap: dict[str, Any], listener: str) -> dict[str, dict[str, Any]]:
    (found,) = [x for x in bootstrap["static_resources"]["listeners"] if x["name"] == listener]
    hcm = found["filter_chains"][0]["filters"][0]["typed_config"]
    return {
        f["name"].removeprefix("envoy.filters.http."): f["typed_config"]
        for f in hcm["http_filters"]
    }


def validate(tmp_path: Path, config: StackConfig) -> subprocess.CompletedProcess[str]:
    path = write(tmp_path, build_bootstrap(config, DESCRIPTOR), DESCRIPTOR)
    return subprocess.run(
        [ENVOY, "--mode", "validate", "-c", str(path), "--log-level", "error"],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.parametrize("source", ["shipped", "test ports"])
def test_envoy_accepts_the_generated_config(tmp_path: Path, source: str) -> None:
    if source == "shipped":
        config = load_config(DEFAULT_CONFIG, environ={})
    else:
        _, config = write_config(tmp_path, stack_config_data())
    done = validate(tmp_path, config)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK" in done.stdout


def test_envoy_rejects_a_broken_config(tmp_path: Path) -> None:
    """The validation above is real: a cluster pointing nowhere valid is refused."""
    bootstrap = build_bootstrap(load_config(DEFAULT_CONFIG, environ={}), DESCRIPTOR)
    bootstrap["static_resources"]["clusters"][0]["lb_policy"] = "NO_SUCH_POLICY"
    path = tmp_path / "envoy.yaml"
    path.write_text(yaml.safe_dump(bootstrap))
    done = subprocess.run(
        [ENVOY, "--mode", "validate", "-c", str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode != 0


def test_ports_and_clusters_follow_the_config() -> None:
    config = load_config(DEFAULT_CONFIG, environ={"LLMPROXY__SERVICES__AUTHZ__GRPC_PORT": "6001"})
    bootstrap = build_bootstrap(config, DESCRIPTOR)
    resources = bootstrap["static_resources"]
    ports = {
        x["name"]: x["address"]["socket_address"]["port_value"] for x in resources["listeners"]
    }
    assert ports == {"client": 8080, "control": 8081, "egress": 8082}
    assert bootstrap["admin"]["address"]["socket_address"]["port_value"] == 9901
    endpoints = {
        c["name"]: c["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"][
            "socket_address"
        ]["port_value"]
        for c in resources["clusters"]
        if c["name"].startswith("llmproxy_")  # our services; providers are on the egress path
    }
    assert endpoints == {
        "llmproxy_router": 50051,
        "llmproxy_ratelimit": 50052,
        "llmproxy_authz": 6001,
        "llmproxy_health": 50054,
        "llmproxy_fault": 50055,
    }
    assert all(
        "http2_protocol_options" in str(c["typed_extension_protocol_options"])
        for c in resources["clusters"]
        if c["name"].startswith("llmproxy_")
    )


def test_client_filters_fail_the_right_way() -> None:
    filters = http_filters(
        build_bootstrap(load_config(DEFAULT_CONFIG, environ={}), DESCRIPTOR), "client"
    )
    assert list(filters) == [
        "local_ratelimit.per_connection",
        "local_ratelimit.per_client_ip_without_credential",
        "local_ratelimit.per_client_ip",
        "local_ratelimit.listener",
        "header_mutation",
        "ext_authz",
        "lua",
        "grpc_json_transcoder",
        "ratelimit",
        "fault_tenant",
        "fault_cluster_header_removal",
        "fault_route",
        "fault_route_grpc",
        "router",
    ]
    assert filters["ext_authz"]["failure_mode_allow"] is False
    assert filters["ext_authz"]["grpc_service"]["timeout"] == "0.5s"
    assert filters["ratelimit"]["failure_mode_deny"] is True  # the shipped limits are closed
    assert filters["ratelimit"]["enable_x_ratelimit_headers"] == "DRAFT_VERSION_03"
    removed = {m["remove"] for m in filters["header_mutation"]["mutations"]["request_mutations"]}
    assert removed == {
        "x-llmproxy-tenant",
        "x-llmproxy-user",
        "x-llmproxy-key-id",
        "x-llmproxy-tier",
        "x-llmproxy-model",
        "x-llmproxy-token-estimate",
        "x-envoy-downstream-service-cluster",
    }
    assert filters["grpc_json_transcoder"]["services"] == [
        "llmproxy.router.v1.OpenAIService",
        "llmproxy.router.v1.AnthropicService",
    ]


def test_descriptor_set_holds_our_apis_and_their_imports() -> None:
    names = [f.name for f in descriptor_set().file]
    for expected in (
        "llmproxy/router/v1/openai.proto",
        "llmproxy/fault/v1/fault.proto",
        "google/api/httpbody.proto",
        "google/api/annotations.proto",
    ):
        assert expected in names
    # Dependencies come before the files that import them, as protoc writes them.
    assert names.index("google/api/httpbody.proto") < names.index("llmproxy/router/v1/openai.proto")
    assert len(names) == len(set(names))


def test_committed_reference_config_is_fresh(tmp_path: Path) -> None:
    """envoy/ holds the config generated from deploy/llmproxy.yaml (`make envoy-config`)."""
    reference = Path(__file__).resolve().parents[2] / "envoy"
    config = load_config(DEFAULT_CONFIG, environ={})
    write(tmp_path, build_bootstrap(config, DESCRIPTOR), DESCRIPTOR)
    for name in ("envoy.yaml", "llmproxy.protoset"):
        assert (reference / name).read_bytes() == (tmp_path / name).read_bytes(), (
            f"envoy/{name} is stale: run `make envoy-config`"
        )


def test_provider_clusters_take_endpoints_and_health_from_the_health_service() -> None:
    environ = {"OPENAI_API_KEY": "sk-test"}
    config = load_config(DEFAULT_CONFIG, environ={})
    bootstrap = build_bootstrap(config, DESCRIPTOR, environ)
    clusters = {c["name"]: c for c in bootstrap["static_resources"]["clusters"]}
    openai = clusters["provider_openai"]
    assert openai["type"] == "EDS"
    assert "load_assignment" not in openai
    eds = openai["eds_cluster_config"]
    assert eds["service_name"] == "provider_openai"
    source = eds["eds_config"]
    assert source["resource_api_version"] == "V3"
    assert source["initial_fetch_timeout"] == "3s"  # a health service down at startup
    api = source["api_config_source"]
    assert (api["api_type"], api["transport_api_version"]) == ("GRPC", "V3")
    (grpc,) = api["grpc_services"]
    assert grpc["envoy_grpc"]["cluster_name"] == "llmproxy_health"
    assert grpc["envoy_grpc"]["retry_policy"]["retry_back_off"]["max_interval"] == "2s"
    # No panic mode: an unhealthy provider is refused, not called anyway.
    assert openai["common_lb_config"]["healthy_panic_threshold"] == {"value": 0}
    # The rest is as before: TLS with SNI, breakers, outlier detection.
    tls = openai["transport_socket"]["typed_config"]
    assert tls["sni"] == "api.openai.com"
    assert openai["circuit_breakers"]["thresholds"][0]["max_requests"] == 2048
    assert openai["outlier_detection"]["consecutive_5xx"] == 5
    # The health service's own cluster is static, HTTP/2 and gRPC health-checked.
    health = clusters["llmproxy_health"]
    assert "http2_protocol_options" in str(health["typed_extension_protocol_options"])
    assert health["health_checks"][0]["grpc_health_check"] == {}


def test_envoy_accepts_eds_clusters_for_real_providers(tmp_path: Path) -> None:
    config = load_config(DEFAULT_CONFIG, environ={})
    environ = {"OPENAI_API_KEY": "sk-test", "GROQ_API_KEY": "gsk-test"}
    path = write(tmp_path, build_bootstrap(config, DESCRIPTOR, environ), DESCRIPTOR)
    done = subprocess.run(
        [ENVOY, "--mode", "validate", "-c", str(path), "--log-level", "error"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _hcm_of(bootstrap: dict[str, Any], listener: str) -> dict[str, Any]:
    (found,) = [x for x in bootstrap["static_resources"]["listeners"] if x["name"] == listener]
    hcm: dict[str, Any] = found["filter_chains"][0]["filters"][0]["typed_config"]
    return hcm


@pytest.mark.parametrize("endpoint", ["127.0.0.1:4317", "otel-collector:4317"])
def test_envoy_accepts_a_tracing_config(tmp_path: Path, endpoint: str) -> None:
    _, config = write_config(
        tmp_path, stack_config_data(tracing={"otlp_endpoint": endpoint, "sample_ratio": 0.25})
    )
    done = validate(tmp_path, config)
    assert done.returncode == 0, done.stdout + done.stderr


def test_tracing_reaches_every_listener_and_the_collector_cluster() -> None:
    environ = {
        "LLMPROXY__TRACING__OTLP_ENDPOINT": "127.0.0.1:4317",
        "LLMPROXY__TRACING__SAMPLE_RATIO": "0.25",
    }
    bootstrap = build_bootstrap(load_config(DEFAULT_CONFIG, environ=environ), DESCRIPTOR)
    for listener in ("client", "control", "egress"):
        tracing = _hcm_of(bootstrap, listener)["tracing"]
        provider = tracing["provider"]
        assert provider["name"] == "envoy.tracers.opentelemetry"
        assert provider["typed_config"]["service_name"] == "envoy"
        assert provider["typed_config"]["grpc_service"]["envoy_grpc"] == {
            "cluster_name": "otel_collector"
        }
        # Sampling is the tracer's: parent-based (a client's sampled traceparent is followed),
        # else the ratio; the HCM's random sampling lets every request through to it.
        assert tracing["random_sampling"] == {"value": 100}
        sampler = provider["typed_config"]["sampler"]
        assert sampler["name"] == "envoy.tracers.opentelemetry.samplers.parent_based"
        ratio = sampler["typed_config"]["wrapped_sampler"]["typed_config"]
        assert ratio["sampling_percentage"] == {"numerator": 250_000, "denominator": "MILLION"}
        # A client's non-UUID x-request-id must not decide sampling (Envoy's default).
        request_id = _hcm_of(bootstrap, listener)["request_id_extension"]["typed_config"]
        assert request_id["use_request_id_for_trace_sampling"] is False
    clusters = {c["name"]: c for c in bootstrap["static_resources"]["clusters"]}
    collector = clusters["otel_collector"]
    assert collector["type"] == "STATIC"
    assert "http2_protocol_options" in str(collector["typed_extension_protocol_options"])
    address = collector["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert address["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 4317}
    static = bootstrap["layered_runtime"]["layers"][0]["static_layer"]
    assert static["tracing.opentelemetry.flush_interval_ms"] == 2000


def test_tracing_is_off_by_default() -> None:
    bootstrap = build_bootstrap(load_config(DEFAULT_CONFIG, environ={}), DESCRIPTOR)
    for listener in ("client", "control", "egress"):
        assert "tracing" not in _hcm_of(bootstrap, listener)
    assert "otel_collector" not in {c["name"] for c in bootstrap["static_resources"]["clusters"]}


def test_fault_filters_default_to_nothing_and_rtds_feeds_their_keys() -> None:
    """Without the fault service's runtime layer no fault applies; each route has its keys."""
    bootstrap = build_bootstrap(load_config(DEFAULT_CONFIG, environ={}), DESCRIPTOR)
    layers = bootstrap["layered_runtime"]["layers"]
    assert [layer["name"] for layer in layers] == ["static", "rtds", "admin"]
    rtds = layers[1]["rtds_layer"]
    assert rtds["name"] == "llmproxy_faults"
    source = rtds["rtds_config"]["api_config_source"]["grpc_services"][0]["envoy_grpc"]
    assert source["cluster_name"] == "llmproxy_fault"
    client = http_filters(bootstrap, "client")
    egress = http_filters(bootstrap, "egress")
    for fault in (client["fault_tenant"], client["fault_route"], egress["fault_provider"]):
        assert fault["abort"]["percentage"]["numerator"] == 0
        assert fault["delay"]["percentage"]["numerator"] == 0
        assert fault["response_rate_limit"]["percentage"]["numerator"] == 0
    assert client["fault_route_grpc"]["abort"]["grpc_status"] == 14
    (listener,) = [x for x in bootstrap["static_resources"]["listeners"] if x["name"] == "client"]
    routes = listener["filter_chains"][0]["filters"][0]["typed_config"]["route_config"][
        "virtual_hosts"
    ][0]["routes"]
    chat = next(
        r for r in routes if r["match"].get("path") == "/llmproxy.router.v1.ChatService/Chat"
    )
    per_route = chat["typed_per_filter_config"]
    assert per_route["fault_route"]["abort_percent_runtime"] == (
        "fault.route.chat.abort.abort_percent"
    )
    assert per_route["fault_route_grpc"]["abort_grpc_status_runtime"] == (
        "fault.route.chat.abort.grpc_status"
    )


def test_egress_routes_carry_per_provider_fault_keys(tmp_path: Path) -> None:
    data = stack_config_data(
        providers=[
            {"name": n, "base_url": f"http://127.0.0.1:{9000 + i}/v1", "api_key_env": None}
            for i, n in enumerate(("one", "two"))
        ],
        models=[{"name": "m", "targets": [{"provider": "one", "model": "x"}]}],
    )
    _, config = write_config(tmp_path, data)
    bootstrap = build_bootstrap(config, DESCRIPTOR)
    (egress,) = [x for x in bootstrap["static_resources"]["listeners"] if x["name"] == "egress"]
    routes = egress["filter_chains"][0]["filters"][0]["typed_config"]["route_config"][
        "virtual_hosts"
    ][0]["routes"]
    keys = {
        r["match"]["prefix"]: r["typed_per_filter_config"]["fault_provider"][
            "delay_percent_runtime"
        ]
        for r in routes
    }
    assert keys == {
        "/one/": "fault.provider.one.delay.fixed_delay_percent",
        "/two/": "fault.provider.two.delay.fixed_delay_percent",
    }
    done = validate(tmp_path, config)
    assert done.returncode == 0, done.stdout + done.stderr


def test_egress_routes_of_azure_and_gemini_rewrite_to_their_base_paths(tmp_path: Path) -> None:
    # Nothing in Envoy depends on the kind: keys travel in the adapters' own headers, and the
    # route only swaps /<provider>/ for the base URL's path (Azure's is empty).
    data = stack_config_data(
        providers=[
            {
                "name": "az",
                "kind": "azure",
                "base_url": "https://res.openai.azure.com",
                "api_key_env": None,
                "api_version": "2024-10-21",
            },
            {
                "name": "gm",
                "kind": "gemini",
                "base_url": "https://generativelanguage.googleapis.com/v1beta",
                "api_key_env": None,
            },
        ],
        models=[{"name": "m", "targets": [{"provider": "az", "model": "x"}]}],
    )
    _, config = write_config(tmp_path, data)
    bootstrap = build_bootstrap(config, DESCRIPTOR)
    (egress,) = [x for x in bootstrap["static_resources"]["listeners"] if x["name"] == "egress"]
    routes = egress["filter_chains"][0]["filters"][0]["typed_config"]["route_config"][
        "virtual_hosts"
    ][0]["routes"]
    rewrites = {r["match"]["prefix"]: r["route"]["prefix_rewrite"] for r in routes}
    assert rewrites == {"/az/": "/", "/gm/": "/v1beta/"}
