"""The router's reconciliation call and Envoy's descriptors come from one definition."""

from __future__ import annotations

import pytest

from llmproxy.common.contract import RESERVED_AT_HEADER, TOKEN_ESTIMATE_HEADER
from llmproxy.common.ratelimit_client import reconcile_request
from llmproxy.common.ratelimit_descriptors import DESCRIPTORS, token_descriptors
from llmproxy.config import DEFAULT_CONFIG, load_config
from llmproxy.envoyconf.build import build_bootstrap
from llmproxy.envoyconf.ratelimit import filter_rate_limits, ratelimit_filter

HEADERS = {
    "x-llmproxy-tenant": "acme",
    "x-llmproxy-key-id": "k1",
    "x-llmproxy-user": "u",
    "x-llmproxy-model": "gpt-4o-mini",
    TOKEN_ESTIMATE_HEADER: "1500",
    RESERVED_AT_HEADER: "1700000000123",
}


def test_envoy_sends_every_descriptor_and_tokens_as_hits() -> None:
    config = load_config(DEFAULT_CONFIG, environ={})
    rate_limits = ratelimit_filter(config)["typed_config"]["rate_limits"]
    assert rate_limits == filter_rate_limits()
    assert len(rate_limits) == len(DESCRIPTORS)
    token_ones = [r for r in rate_limits if "hits_addend" in r]
    assert len(token_ones) == 4
    assert {r["hits_addend"]["format"] for r in token_ones} == {"%REQ(x-llmproxy-token-estimate)%"}
    headers = {
        a["request_headers"]["header_name"]
        for r in rate_limits
        for a in r["actions"]
        if "request_headers" in a
    }
    assert headers == {
        "x-llmproxy-tenant",
        "x-llmproxy-key-id",
        "x-llmproxy-user",
        "x-llmproxy-tier",
        "x-llmproxy-model",
    }
    assert any("remote_address" in a for r in rate_limits for a in r["actions"])


def test_several_instances_are_several_endpoints() -> None:
    config = load_config(DEFAULT_CONFIG, environ={"LLMPROXY__SERVICES__RATELIMIT__INSTANCES": "3"})
    clusters = build_bootstrap(config, b"")["static_resources"]["clusters"]
    (ratelimit,) = [c for c in clusters if c["name"] == "llmproxy_ratelimit"]
    ports = [
        e["endpoint"]["address"]["socket_address"]["port_value"]
        for e in ratelimit["load_assignment"]["endpoints"][0]["lb_endpoints"]
    ]
    assert ports == [50052, 50062, 50072]
    assert ratelimit["lb_policy"] == "LEAST_REQUEST"


def test_reconcile_request_rebuilds_the_token_descriptors() -> None:
    request = reconcile_request(HEADERS, 900)
    assert request is not None
    assert (request.reserved_tokens, request.actual_tokens) == (1500, 900)
    assert request.reserved_at.ToMilliseconds() == 1700000000123
    sent = [tuple((e.key, e.value) for e in d.entries) for d in request.descriptors]
    assert sent == token_descriptors(HEADERS)
    assert (("tokens", "estimate"), ("tenant", "acme"), ("key_id", "k1")) in sent
    assert (("tokens", "estimate"), ("model", "gpt-4o-mini")) in sent


def test_nothing_to_reconcile_without_a_reservation() -> None:
    without = {k: v for k, v in HEADERS.items() if k != RESERVED_AT_HEADER}
    assert reconcile_request(without, 900) is None
    assert reconcile_request({**HEADERS, TOKEN_ESTIMATE_HEADER: "many"}, 900) is None
    with pytest.raises(ValueError, match="must not be negative"):
        reconcile_request(HEADERS, -1)
