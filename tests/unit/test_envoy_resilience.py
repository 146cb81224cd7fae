"""Envoy's side of losing an instance: health checks, outlier detection, and safe retries only."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from llmproxy.common.access import rule_for
from llmproxy.common.contract import SERVICES
from llmproxy.config import DEFAULT_CONFIG, load_config
from llmproxy.envoyconf.build import build_bootstrap, write
from llmproxy.envoyconf.resilience import PREVIOUS_HOSTS
from tests.harness.configs import scaled_out_data, write_config
from tests.unit.test_envoy_config import DESCRIPTOR, ENVOY, http_filters, validate


def _bootstrap() -> dict[str, Any]:
    return build_bootstrap(load_config(DEFAULT_CONFIG, environ={}), DESCRIPTOR)


def _clusters(bootstrap: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in bootstrap["static_resources"]["clusters"]}


def _routes(bootstrap: dict[str, Any], listener: str) -> list[dict[str, Any]]:
    (found,) = [x for x in bootstrap["static_resources"]["listeners"] if x["name"] == listener]
    hcm = found["filter_chains"][0]["filters"][0]["typed_config"]
    routes: list[dict[str, Any]] = hcm["route_config"]["virtual_hosts"][0]["routes"]
    return routes


def _goes_elsewhere(policy: dict[str, Any]) -> bool:
    (predicate,) = policy["retry_host_predicate"]
    return bool(predicate["typed_config"]["@type"].endswith(PREVIOUS_HOSTS))


def test_every_service_cluster_notices_a_dead_instance_within_seconds() -> None:
    clusters = _clusters(_bootstrap())
    for service in SERVICES:
        cluster = clusters[f"llmproxy_{service}"]
        (check,) = cluster["health_checks"]
        # Two failed checks a second apart, also before the cluster carried any traffic.
        assert check["interval"] == check["no_traffic_interval"] == "1s"
        assert check["unhealthy_threshold"] == 2
        assert "grpc_health_check" in check
        ejection = cluster["outlier_detection"]
        # Two instances: one may be ejected, never both.
        assert ejection["max_ejection_percent"] == 50
        assert ejection["split_external_local_origin_errors"] is True
        assert ejection["consecutive_local_origin_failure"] == 2
        assert ejection["enforcing_consecutive_local_origin_failure"] == 100
        # The router's errors are its providers': they never eject a router instance.
        enforced = 0 if service == "router" else 100
        assert ejection["enforcing_consecutive_5xx"] == enforced
        assert ejection["enforcing_consecutive_gateway_failure"] == enforced


def test_the_checks_are_retried_once_on_another_instance() -> None:
    filters = http_filters(_bootstrap(), "client")
    services = {
        "ext_authz": filters["ext_authz"]["grpc_service"],
        "ratelimit": filters["ratelimit"]["rate_limit_service"]["grpc_service"],
    }
    for service in services.values():
        policy = service["retry_policy"]
        assert policy["num_retries"] == 1
        assert set(policy["retry_on"].split(",")) == {
            "connect-failure",
            "refused-stream",
            "reset",
            "unavailable",
        }
        assert _goes_elsewhere(policy)
        # Envoy uses the back-off cap as each attempt's timeout (envoyproxy/envoy#38847): a
        # lower cap fails every check slower than it.
        assert policy["retry_back_off"]["max_interval"] == service["timeout"]


def test_client_requests_are_retried_only_when_the_router_never_answered() -> None:
    routes = [r for r in _routes(_bootstrap(), "client") if "route" in r]
    assert routes
    for route in routes:
        policy = route["route"]["retry_policy"]
        # No status condition: an answer of the router (UNAVAILABLE after its providers failed,
        # a 5xx) is the client's; only a lost connection or stream is retried.
        assert set(policy["retry_on"].split(",")) == {"connect-failure", "refused-stream", "reset"}
        assert policy["num_retries"] == 1
        assert _goes_elsewhere(policy)


def test_only_control_calls_that_change_nothing_are_retried() -> None:
    routes = _routes(_bootstrap(), "control")
    retried = {r["match"]["path"] for r in routes if "retry_policy" in r["route"]}
    assert "/llmproxy.authz.v1.AuthzService/GetKey" in retried
    assert "/llmproxy.fault.v1.FaultService/ListExperiments" in retried
    assert "/llmproxy.health.v1.ProviderHealthService/WatchProviders" in retried
    for path in retried:
        rule = rule_for(path)
        assert rule is not None, path
        assert not rule.mutating, path
        assert not rule.open, path
    # Mutating calls (and the data plane) reach their service by the package route, unretried.
    for path in (
        "/llmproxy.authz.v1.AuthzService/CreateKey",
        "/llmproxy.fault.v1.FaultService/StartExperiment",
        "/llmproxy.router.v1.OpenAIService/CreateChatCompletion",
    ):
        assert path not in retried
    prefixes = [r for r in routes if "prefix" in r["match"]]
    assert [r["match"]["prefix"] for r in prefixes] == [f"/llmproxy.{s}.v1." for s in SERVICES]
    assert not any("retry_policy" in r["route"] for r in prefixes)
    # An exact route comes before its service's prefix route, or it would never match.
    order = [r["match"].get("path") or r["match"]["prefix"] for r in routes]
    for path in retried:
        package = path.split("/")[1].rsplit(".", 1)[0]
        assert order.index(path) < order.index(f"/{package}.")


def test_envoy_accepts_two_instances_of_every_service(tmp_path: Path) -> None:
    _, config = write_config(tmp_path, scaled_out_data(2))
    done = validate(tmp_path, config)
    assert done.returncode == 0, done.stdout + done.stderr
    clusters = _clusters(build_bootstrap(config, DESCRIPTOR))
    for service in SERVICES:
        endpoints = clusters[f"llmproxy_{service}"]["load_assignment"]["endpoints"][0]
        assert len(endpoints["lb_endpoints"]) == 2


def test_envoy_refuses_a_retry_predicate_it_does_not_know(tmp_path: Path) -> None:
    """The validation above checks the retry policies: a broken one is refused."""
    bootstrap = _bootstrap()
    route = _routes(bootstrap, "client")[0]["route"]
    route["retry_policy"]["retry_host_predicate"][0]["name"] = "no.such.predicate"
    route["retry_policy"]["retry_host_predicate"][0]["typed_config"]["@type"] = (
        "type.googleapis.com/no.such.Predicate"
    )
    path = write(tmp_path, bootstrap, DESCRIPTOR)
    done = subprocess.run(
        [ENVOY, "--mode", "validate", "-c", str(path), "--log-level", "error"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode != 0
