"""Envoy under overload: failure modes from the limits file, circuit breakers, clean 503s."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from llmproxy.common.descriptors import descriptor_set
from llmproxy.common.errors import ConfigError
from llmproxy.common.limits_file import parse_limits
from llmproxy.config import StackConfig
from llmproxy.envoyconf.build import build_bootstrap, write
from llmproxy.envoyconf.ratelimit import failure_mode_deny
from tests.harness.configs import stack_config_data, write_config
from tests.unit.test_envoy_config import http_filters

ENVOY = str(Path(sys.executable).parent / "envoy")
DESCRIPTOR = descriptor_set().SerializeToString(deterministic=True)
R = "rate_limit: {unit: second, requests_per_unit: 5}"


def deny(descriptors: str) -> bool:
    return failure_mode_deny(
        parse_limits(f"domain: llmproxy\ndescriptors: {descriptors}", "t.yaml", "llmproxy")
    )


@pytest.mark.parametrize(
    ("descriptors", "expected"),
    [
        ("[]", False),
        # The route safety net is open unless it says otherwise.
        ("[{key: route, value: openai, " + R + "}]", False),
        ("[{key: route, value: openai, " + R + ", failure_mode: closed}]", True),
        ("[{key: route, value: open*, " + R + ", failure_mode: closed}]", True),
        ("[{key: route, " + R + ", failure_mode: closed}]", True),
        # Every other limit is closed unless it says otherwise; one closed limit is enough.
        ("[{key: route, value: openai, " + R + "}, {key: tenant, " + R + "}]", True),
        ("[{key: tenant, " + R + ", failure_mode: open}]", False),
        ("[{key: tenant, descriptors: [{key: key_id, " + R + "}]}]", True),
        ("[{key: tokens, descriptors: [{key: model, " + R + "}]}]", True),
        ("[{key: remote_address, " + R + "}]", True),
        # A limit that never refuses, or that no descriptor Envoy sends reaches, cannot.
        ("[{key: tenant, " + R + ", shadow_mode: true}]", False),
        ("[{key: tenant, unlimited: true}]", False),
        ("[{key: route, value: admin, " + R + ", failure_mode: closed}]", False),
        ("[{key: team, " + R + "}]", False),
        ("[{key: tenant, descriptors: [{key: team, " + R + "}]}]", False),
        ("[{key: tokens, value: other, descriptors: [{key: tenant, " + R + "}]}]", False),
    ],
)
def test_a_check_fails_closed_when_any_limit_it_reaches_is_closed(
    descriptors: str, expected: bool
) -> None:
    assert deny(descriptors) is expected


def stack(tmp_path: Path, limits: str, **envoy: Any) -> StackConfig:
    path = tmp_path / "ratelimit.yaml"
    path.write_text(f"domain: llmproxy\ndescriptors: {limits}")
    data = stack_config_data()
    data["services"]["ratelimit"]["limits_file"] = str(path)
    data["envoy"].update(envoy)
    return write_config(tmp_path, data)[1]


def validate(tmp_path: Path, config: StackConfig) -> dict[str, Any]:
    bootstrap = build_bootstrap(config, DESCRIPTOR)
    path = write(tmp_path / "envoy", bootstrap, DESCRIPTOR)
    done = subprocess.run(
        [ENVOY, "--mode", "validate", "-c", str(path), "--log-level", "error"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return bootstrap


@pytest.mark.parametrize("mode", ["open", "closed"])
def test_the_ratelimit_filter_follows_the_limits_file(tmp_path: Path, mode: str) -> None:
    config = stack(tmp_path, "[{key: tenant, " + R + ", failure_mode: " + mode + "}]")
    ratelimit = http_filters(validate(tmp_path, config), "client")["ratelimit"]
    assert ratelimit["failure_mode_deny"] is (mode == "closed")
    assert ratelimit["status_on_error"] == {"code": "ServiceUnavailable"}
    assert ratelimit["timeout"] == "0.5s"


def test_an_invalid_limits_file_stops_the_generator_naming_the_field(tmp_path: Path) -> None:
    config = stack(tmp_path, "[{key: tenant, " + R + ", failure_mode: maybe}]")
    with pytest.raises(ConfigError, match=r"descriptors\[0\]\.failure_mode: Input should be"):
        build_bootstrap(config, DESCRIPTOR)


def test_the_check_clusters_shed_beyond_their_circuit_breakers(tmp_path: Path) -> None:
    config = stack(tmp_path, "[]", ext_authz_max_requests=300, ratelimit_max_requests=40)
    clusters = {c["name"]: c for c in validate(tmp_path, config)["static_resources"]["clusters"]}
    limits = {
        name: clusters[f"llmproxy_{name}"]["circuit_breakers"]["thresholds"][0]
        for name in ("authz", "ratelimit")
    }
    assert limits == {
        "authz": {
            "priority": "DEFAULT",
            "max_requests": 300,
            "max_pending_requests": 300,
            # A check lost with its instance is retried (resilience.py), within max_requests.
            "max_retries": 300,
        },
        "ratelimit": {
            "priority": "DEFAULT",
            "max_requests": 40,
            "max_pending_requests": 40,
            "max_retries": 40,
        },
    }
    # The other services are not called per request: Envoy's defaults stay, but for the
    # router's retries, which may take every request a lost instance held.
    (router,) = clusters["llmproxy_router"]["circuit_breakers"]["thresholds"]
    assert set(router) == {"priority", "retry_budget"}
    assert all("circuit_breakers" not in clusters[f"llmproxy_{n}"] for n in ("health", "fault"))


def mappers(bootstrap: dict[str, Any]) -> list[dict[str, Any]]:
    (client,) = [x for x in bootstrap["static_resources"]["listeners"] if x["name"] == "client"]
    hcm = client["filter_chains"][0]["filters"][0]["typed_config"]
    found: list[dict[str, Any]] = hcm["local_reply_config"]["mappers"]
    return found


def test_a_check_that_cannot_finish_gets_a_503_saying_so_with_retry_after(
    tmp_path: Path,
) -> None:
    found = mappers(validate(tmp_path, stack(tmp_path, "[]")))
    retry_after = [
        {"header": {"key": "retry-after", "value": "1"}, "append_action": "ADD_IF_ABSENT"}
    ]
    # OpenAI's mappers; Anthropic's paths have their own (test_envoy_local_replies.py).
    by_flag = {
        str(m["filter"]["and_filter"]["filters"][0]["response_flag_filter"]["flags"]): m
        for m in found
        if "and_filter" in m["filter"]
        and not any("header_filter" in f for f in m["filter"]["and_filter"]["filters"])
    }
    assert set(by_flag) == {"['UAEX']", "['RLSE']"}
    for flag, check in (("['UAEX']", "authorization"), ("['RLSE']", "rate limit")):
        mapper = by_flag[flag]
        assert mapper["headers_to_add"] == retry_after
        assert mapper["body"]["inline_string"].startswith(f"The {check} check of this request")
        error = mapper["body_format_override"]["json_format"]["error"]
        assert error["type"] == "service_unavailable"
        assert error["message"] == "%LOCAL_REPLY_BODY%"
    # Envoy's other 503s (no healthy router, its circuit breaker) carry retry-after too; its
    # 429s carry the rate limiter's own.
    generic = {
        m["filter"]["status_code_filter"]["comparison"]["value"]["default_value"]: m
        for m in found
        if "status_code_filter" in m["filter"]
    }
    assert generic[503]["headers_to_add"] == retry_after
    assert "headers_to_add" not in generic[429]
