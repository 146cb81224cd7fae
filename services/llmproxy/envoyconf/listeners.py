"""Envoy listeners: the client (OpenAI API) listener and the control gRPC listener."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from llmproxy.common.contract import (
    CHAT_SERVICE,
    CLIENT_ROUTES,
    SERVICES,
    STATUS_HEADER,
    TRANSCODED_SERVICES,
    service_cluster_name,
)
from llmproxy.common.openai_errors import error_object
from llmproxy.config import StackConfig
from llmproxy.envoyconf.authz import authz_filters
from llmproxy.envoyconf.clusters import socket_address, typed
from llmproxy.envoyconf.edge import client_hcm_options, edge_filters
from llmproxy.envoyconf.fault import client_fault_filters, client_route_faults
from llmproxy.envoyconf.local_replies import UNKNOWN_URL_MESSAGE, local_reply_config
from llmproxy.envoyconf.ratelimit import ratelimit_filter
from llmproxy.envoyconf.resilience import read_retry_policy, read_rpcs, router_retry_policy
from llmproxy.envoyconf.tracing import hcm_tracing

HCM = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
LUA_STATUS_FILTER = Path(__file__).with_name("openai_status.lua")
CONTROL_TIMEOUT = "30s"

_ACCESS_LOG_FORMAT = {
    "ts": "%START_TIME%",
    "method": "%REQ(:METHOD)%",
    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "status": "%RESPONSE_CODE%",
    "flags": "%RESPONSE_FLAGS%",
    # Why Envoy answered as it did: local_rate_limited (edge tier) and request_rate_limited
    # (exact tier) both carry the flag RL.
    "details": "%RESPONSE_CODE_DETAILS%",
    "duration_ms": "%DURATION%",
    "upstream": "%UPSTREAM_CLUSTER%",
    "request_id": "%REQ(X-REQUEST-ID)%",
}


def status_filter_source() -> str:
    """The Lua status filter, reading the header the router names the status in."""
    source = LUA_STATUS_FILTER.read_text()
    default = 'local STATUS_HEADER = "x-llmproxy-status"'
    if default not in source:
        raise RuntimeError(f"{LUA_STATUS_FILTER} no longer declares STATUS_HEADER")
    return source.replace(default, f"local STATUS_HEADER = {json.dumps(STATUS_HEADER)}")


def _access_log() -> list[dict[str, Any]]:
    return [
        {
            "name": "envoy.access_loggers.stdout",
            "typed_config": typed(
                "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
                log_format={"json_format": _ACCESS_LOG_FORMAT},
            ),
        }
    ]


def _not_found_route() -> dict[str, Any]:
    error = error_object(UNKNOWN_URL_MESSAGE, "invalid_request_error", code="unknown_url")
    return {
        "match": {"prefix": "/"},
        "direct_response": {"status": 404, "body": {"inline_string": json.dumps(error)}},
        "response_headers_to_add": [
            {"header": {"key": "content-type", "value": "application/json"}}
        ],
    }


def _client_http_filters(config: StackConfig, descriptor: bytes) -> list[dict[str, Any]]:
    envoy = config.envoy
    return [
        # The edge tier first: a request it refuses never reaches authz (Python).
        *edge_filters(config.edge),
        *authz_filters(config),
        {
            # Before the transcoder, so that on the response path it sees the transcoded headers.
            "name": "envoy.filters.http.lua",
            "typed_config": typed(
                "envoy.extensions.filters.http.lua.v3.Lua",
                default_source_code={"inline_string": status_filter_source()},
            ),
        },
        {
            "name": "envoy.filters.http.grpc_json_transcoder",
            "typed_config": typed(
                "envoy.extensions.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder",
                proto_descriptor_bin=base64.b64encode(descriptor).decode(),
                services=list(TRANSCODED_SERVICES),
                print_options={"preserve_proto_field_names": True},
                max_request_body_size=envoy.max_request_bytes,
                convert_grpc_status=True,
                # Clients add query parameters of their own (Claude Code's `?beta=true`, SDK
                # pagination): ignored, as the APIs we mirror ignore them, rather than 404.
                ignore_unknown_query_parameters=True,
            ),
        },
        # After the transcoder: Envoy's ratelimit filter only calls out for a request whose
        # route forwards somewhere, and until the transcoder rewrites it an OpenAI request's
        # REST path matches only the catch-all 404 route.
        ratelimit_filter(config),
        # After authz (its headers name the tenant) and the transcoder (the route is known).
        *client_fault_filters(config.services.fault.bandwidth_kbps),
        {
            "name": "envoy.filters.http.router",
            "typed_config": typed("envoy.extensions.filters.http.router.v3.Router"),
        },
    ]


def _hcm(
    stat_prefix: str,
    route_config: dict[str, Any],
    filters: list[dict[str, Any]],
    idle_timeout_s: float,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": typed(
            HCM,
            stat_prefix=stat_prefix,
            codec_type="AUTO",
            stream_idle_timeout=f"{idle_timeout_s}s",
            access_log=_access_log(),
            route_config=route_config,
            http_filters=filters,
            **extra,
        ),
    }


def _router_route(timeout: str) -> dict[str, Any]:
    # A request whose router never answered goes to another instance (resilience.py).
    return {
        "cluster": service_cluster_name("router"),
        "timeout": timeout,
        "retry_policy": router_retry_policy(),
    }


def client_listener(config: StackConfig, descriptor: bytes) -> dict[str, Any]:
    """The OpenAI-compatible API: authz, rate limit, transcoding to the router."""
    envoy = config.envoy
    timeout = f"{envoy.request_timeout_s}s"
    route_config = {
        "name": "openai",
        "virtual_hosts": [
            {
                "name": "openai",
                "domains": ["*"],
                "routes": [
                    # One route per client route name, each with its own fault runtime keys.
                    *(
                        {
                            "match": {"path": f"/{method}", "grpc": {}},
                            "route": _router_route(timeout),
                            "typed_per_filter_config": client_route_faults(
                                route,
                                config.services.fault.bandwidth_kbps,
                                grpc_clients=method.startswith(CHAT_SERVICE),
                            ),
                        }
                        for route, methods in CLIENT_ROUTES.items()
                        for method in methods
                    ),
                    # Transcoded requests, and gRPC clients of the typed API, reach the router
                    # by method path, through the same authorization and limits.
                    *(
                        {
                            "match": {"prefix": f"/{service}/", "grpc": {}},
                            "route": _router_route(timeout),
                        }
                        for service in (*TRANSCODED_SERVICES, CHAT_SERVICE)
                    ),
                    _not_found_route(),
                ],
            }
        ],
    }
    return {
        "name": "client",
        "address": socket_address(envoy.host, envoy.listener_port),
        "per_connection_buffer_limit_bytes": 1024 * 1024,
        "filter_chains": [
            {
                "filters": [
                    _hcm(
                        "client",
                        route_config,
                        _client_http_filters(config, descriptor),
                        config.edge.stream_idle_timeout_s,
                        local_reply_config=local_reply_config(),
                        **client_hcm_options(config.edge, envoy.request_timeout_s),
                        **hcm_tracing(config.tracing),
                    )
                ]
            }
        ],
    }


def control_listener(config: StackConfig) -> dict[str, Any]:
    """Routes control gRPC calls to each service by the package in the method path.

    Calls that change nothing have a route of their own, before their service's, that retries
    them on another instance when theirs is lost (resilience.py).
    """
    routes: list[dict[str, Any]] = []
    for service in SERVICES:
        cluster = service_cluster_name(service)
        package = f"llmproxy.{service}.v1"
        routes.extend(
            {
                "match": {"path": path, "grpc": {}},
                "route": {
                    "cluster": cluster,
                    "timeout": CONTROL_TIMEOUT,
                    "retry_policy": read_retry_policy(),
                },
            }
            for path in read_rpcs(package)
        )
        routes.append(
            {
                "match": {"prefix": f"/{package}.", "grpc": {}},
                "route": {"cluster": cluster, "timeout": CONTROL_TIMEOUT},
            }
        )
    route_config = {
        "name": "control",
        "virtual_hosts": [{"name": "control", "domains": ["*"], "routes": routes}],
    }
    router = {
        "name": "envoy.filters.http.router",
        "typed_config": typed("envoy.extensions.filters.http.router.v3.Router"),
    }
    return {
        "name": "control",
        "address": socket_address(config.envoy.host, config.envoy.control_port),
        # edge.max_connections counts clients only: operators still get in under a flood.
        "ignore_global_conn_limit": True,
        "filter_chains": [
            {
                "filters": [
                    _hcm("control", route_config, [router], 300, **hcm_tracing(config.tracing))
                ]
            }
        ],
    }
