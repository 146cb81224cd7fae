"""Endpoint assignments for Envoy, and the EDS stream's subscribe / ACK / NACK / push logic."""

from __future__ import annotations

from dataclasses import replace

import pytest
from envoy.config.core.v3 import health_check_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.service.discovery.v3 import discovery_pb2

from llmproxy.common.contract import ENVOYS_CLUSTER
from llmproxy.common.settings import ProviderSettings
from llmproxy.common.xds import SotwStream
from llmproxy.health import xds
from llmproxy.health.dns import Target
from llmproxy.health.eds import endpoint_resources
from llmproxy.health.fleet import Fleet
from llmproxy.health.registry import Registry
from llmproxy.health.state import ProviderStatus

HEALTHY = ProviderStatus("openai", "openai", "https://api.openai.com/v1", "healthy", "probes pass")
TARGET = Target("api.openai.com", 443, ("10.0.0.1", "10.0.0.2"))


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({}, health_check_pb2.HEALTHY),
        ({"state": "unspecified"}, health_check_pb2.UNKNOWN),
        ({"state": "degraded"}, health_check_pb2.DEGRADED),
        ({"state": "unhealthy"}, health_check_pb2.UNHEALTHY),
        ({"circuit": "open"}, health_check_pb2.UNHEALTHY),
        ({"enabled": False}, health_check_pb2.UNHEALTHY),
        ({"maintenance": True}, health_check_pb2.DRAINING),
        ({"state": "unhealthy", "maintenance": True}, health_check_pb2.DRAINING),
    ],
)
def test_health_status_follows_the_provider(change: dict[str, object], expected: int) -> None:
    assignment = xds.load_assignment(replace(HEALTHY, **change), TARGET)  # type: ignore[arg-type]
    statuses = [e.health_status for e in assignment.endpoints[0].lb_endpoints]
    assert statuses == [expected, expected]


def test_one_endpoint_per_address_with_the_host_name() -> None:
    assignment = xds.load_assignment(HEALTHY, TARGET)
    assert assignment.cluster_name == "provider_openai"
    endpoints = [e.endpoint for e in assignment.endpoints[0].lb_endpoints]
    assert [
        (e.address.socket_address.address, e.address.socket_address.port_value) for e in endpoints
    ] == [
        ("10.0.0.1", 443),
        ("10.0.0.2", 443),
    ]
    assert {e.hostname for e in endpoints} == {"api.openai.com"}  # for auto_host_rewrite


def test_no_address_yet_means_no_endpoint() -> None:
    assert not xds.load_assignment(HEALTHY, None).endpoints
    assert not xds.load_assignment(HEALTHY, Target("x", 1, ())).endpoints


def registry() -> Registry:
    found = Registry(
        [
            ProviderSettings(name="a", base_url="http://127.0.0.1:1/v1"),
            ProviderSettings(name="b", base_url="http://127.0.0.1:2/v1"),
        ]
    )
    found.set_target("a", Target("127.0.0.1", 1, ("127.0.0.1",)))
    found.set_target("b", Target("127.0.0.1", 2, ("127.0.0.1",)))
    return found


def request(*names: str, nonce: str = "", error: str = "") -> discovery_pb2.DiscoveryRequest:
    found = discovery_pb2.DiscoveryRequest(
        resource_names=names, type_url=xds.TYPE_URL, response_nonce=nonce
    )
    if error:
        found.error_detail.message = error
        found.error_detail.code = 3
    return found


def decode(
    response: discovery_pb2.DiscoveryResponse,
) -> dict[str, endpoint_pb2.ClusterLoadAssignment]:
    found = {}
    for resource in response.resources:
        assignment = endpoint_pb2.ClusterLoadAssignment()
        resource.Unpack(assignment)
        found[assignment.cluster_name] = assignment
    return found


def test_a_subscription_is_answered_with_what_it_names() -> None:
    stream = SotwStream(endpoint_resources(registry(), Fleet()))
    assert stream.on_request(request("provider_a"))
    response = stream.response(force=True)
    assert response is not None
    assert response.type_url == xds.TYPE_URL
    assert list(decode(response)) == ["provider_a"]


def test_an_ack_needs_no_answer_and_nothing_new_is_not_pushed() -> None:
    stream = SotwStream(endpoint_resources(registry(), Fleet()))
    stream.on_request(request("provider_a", "provider_b"))
    first = stream.response(force=True)
    assert first is not None
    assert not stream.on_request(request("provider_a", "provider_b", nonce=first.nonce))
    assert stream.response(force=False) is None


def test_a_health_change_is_pushed_with_a_new_version_and_nonce() -> None:
    reg = registry()
    stream = SotwStream(endpoint_resources(reg, Fleet()))
    stream.on_request(request("provider_a"))
    first = stream.response(force=True)
    assert first is not None
    reg.update(ProviderStatus("a", "openai", "http://127.0.0.1:1/v1", "unhealthy", "down"))
    pushed = stream.response(force=False)
    assert pushed is not None
    assert (pushed.version_info, pushed.nonce) != (first.version_info, first.nonce)
    endpoint = decode(pushed)["provider_a"].endpoints[0].lb_endpoints[0]
    assert endpoint.health_status == health_check_pb2.UNHEALTHY
    # b changed too, but this stream does not watch it.
    reg.update(ProviderStatus("b", "openai", "http://127.0.0.1:2/v1", "unhealthy", "down"))
    assert stream.response(force=False) is None


def test_a_nack_is_counted_and_not_answered() -> None:
    stream = SotwStream(endpoint_resources(registry(), Fleet()))
    stream.on_request(request("provider_a"))
    sent = stream.response(force=True)
    assert sent is not None
    assert not stream.on_request(request("provider_a", nonce=sent.nonce, error="bad address"))


def test_a_reconnect_or_new_names_get_an_answer_and_unknown_names_are_left_out() -> None:
    stream = SotwStream(endpoint_resources(registry(), Fleet()))
    stream.on_request(request("provider_a"))
    stream.response(force=True)
    assert stream.on_request(request("provider_a", "provider_nope", nonce="1"))
    response = stream.response(force=True)
    assert response is not None
    assert list(decode(response)) == ["provider_a"]
    assert stream.on_request(request("provider_a", "provider_nope"))  # empty nonce: fresh


def test_a_wildcard_subscription_gets_every_provider() -> None:
    stream = SotwStream(endpoint_resources(registry(), Fleet()))
    stream.on_request(request())
    response = stream.snapshot()
    assert sorted(decode(response)) == [ENVOYS_CLUSTER, "provider_a", "provider_b"]
