"""Envoy's authorization config: body to ext_authz, trusted headers stripped, denials kept."""

from __future__ import annotations

from typing import Any

from llmproxy.common.descriptors import descriptor_set
from llmproxy.config import DEFAULT_CONFIG, load_config
from llmproxy.envoyconf.build import build_bootstrap

DESCRIPTOR = descriptor_set().SerializeToString(deterministic=True)


def client_hcm(environ: dict[str, str]) -> dict[str, Any]:
    config = load_config(DEFAULT_CONFIG, environ=environ)
    bootstrap = build_bootstrap(config, DESCRIPTOR)
    (client,) = [x for x in bootstrap["static_resources"]["listeners"] if x["name"] == "client"]
    hcm: dict[str, Any] = client["filter_chains"][0]["filters"][0]["typed_config"]
    return hcm


def ext_authz(environ: dict[str, str]) -> dict[str, Any]:
    (found,) = [
        f["typed_config"]
        for f in client_hcm(environ)["http_filters"]
        if f["name"] == "envoy.filters.http.ext_authz"
    ]
    return found


def test_ext_authz_gets_the_whole_body_and_only_the_headers_it_needs() -> None:
    config = ext_authz({})
    assert config["with_request_body"] == {
        "max_request_bytes": 4 * 1024 * 1024,
        "allow_partial_message": False,
        "pack_as_bytes": True,
    }
    allowed = {p["exact"] for p in config["allowed_headers"]["patterns"]}
    assert allowed == {"authorization", "x-api-key", "content-type"}


def test_the_body_limit_follows_max_request_bytes() -> None:
    config = ext_authz({"LLMPROXY__ENVOY__MAX_REQUEST_BYTES": "65536"})
    assert config["with_request_body"]["max_request_bytes"] == 65536


def test_fail_closed_by_default_and_configurable() -> None:
    assert ext_authz({})["failure_mode_allow"] is False
    assert ext_authz({})["status_on_error"] == {"code": "ServiceUnavailable"}
    opened = ext_authz({"LLMPROXY__SERVICES__AUTHZ__FAILURE_MODE_ALLOW": "true"})
    assert opened["failure_mode_allow"] is True


def test_denials_pass_the_local_reply_mappers_untouched() -> None:
    mappers = client_hcm({})["local_reply_config"]["mappers"]
    first = mappers[0]
    assert "body_format_override" not in first
    filters = first["filter"]["and_filter"]["filters"]
    assert {"response_flag_filter": {"flags": ["UAEX"]}} in filters
    # Envoy's own 429 is still rewritten by a later mapper.
    assert any(
        m["filter"].get("status_code_filter", {}).get("comparison", {}).get("value", {})
        == {"default_value": 429, "runtime_key": "unused"}
        for m in mappers[1:]
    )
