"""Envoy's edge tier: token buckets on the client listener ahead of authz, and Envoy's own limits.

Four `local_ratelimit` filters run first on the client listener, each a bucket of the `edge`
section (per connection, per client address without a credential, per client address, the
listener as a whole), so a flood is refused in C++ before it costs an authz check. A refusal is a
429 in OpenAI's error shape (Anthropic's on its paths: local_replies.py) with `retry-after` and
draft-03 `x-ratelimit-*` headers, like the exact tier's, and names its bucket in
`x-llmproxy-edge-limit`. Each filter counts in Envoy's stats under `edge_<bucket>` and can be
switched to shadow mode at runtime (`edge.<bucket>.enforced` to 0).

With `share_across_replicas`, the per-address and listener buckets are divided among the Envoy
replicas (`local_cluster_rate_limit`): each takes 1/N of every bucket, N being the hosts of its
local cluster, ENVOYS_CLUSTER, which the health service fills with the Envoys on its EDS.

The client address is Envoy's downstream remote address: the peer, or the X-Forwarded-For entry
`xff_num_trusted_hops` from the right when proxies in front are trusted.
"""

from __future__ import annotations

from typing import Any

from llmproxy.common.contract import CREDENTIAL_HEADERS, ENVOYS_CLUSTER
from llmproxy.common.edge_settings import EdgeSettings, TokenBucket
from llmproxy.envoyconf.clusters import typed
from llmproxy.envoyconf.egress import health_eds_config

LOCAL_RATELIMIT = "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
STAT_PREFIX = "edge_"
# Names the bucket that refused a request, for the client and in the error message.
EDGE_LIMIT_HEADER = "x-llmproxy-edge-limit"
# Envoy's response code details of a local_ratelimit refusal (the exact tier's are
# `request_rate_limited`): how the reply mapper tells edge refusals from other 429s.
REFUSAL_DETAILS = "local_rate_limited"
# The descriptor the remote_address action makes; an empty value in a configured descriptor is
# a wildcard, which gives every address a bucket of its own.
CLIENT_IP_KEY = "remote_address"
CREDENTIAL_KEY = "credential"
NO_CREDENTIAL = "none"
# The overload manager's thresholds, as Envoy's edge proxy guide has them: give memory back
# first, refuse new requests only when that was not enough.
SHRINK_HEAP_AT = 0.95
STOP_REQUESTS_AT = 0.98


def _always(runtime_key: str) -> dict[str, Any]:
    return {
        "default_value": {"numerator": 100, "denominator": "HUNDRED"},
        "runtime_key": runtime_key,
    }


def _token_bucket(bucket: TokenBucket) -> dict[str, Any]:
    tokens, seconds = bucket.refill()
    return {"max_tokens": bucket.burst, "tokens_per_fill": tokens, "fill_interval": f"{seconds}s"}


def _refusal_headers(name: str, bucket: TokenBucket) -> list[dict[str, Any]]:
    # Static values: a refused client has no token, and one comes back after retry-after
    # seconds. The limit is given as the exact tier gives it (draft-03), with the burst.
    tokens, seconds = bucket.refill()
    wait = str(bucket.retry_after_s)
    headers = {
        "retry-after": wait,
        "x-ratelimit-limit": f"{bucket.burst}, {tokens};w={seconds};burst={bucket.burst}",
        "x-ratelimit-remaining": "0",
        "x-ratelimit-reset": wait,
        EDGE_LIMIT_HEADER: name,
    }
    return [
        {"header": {"key": key, "value": value}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}
        for key, value in headers.items()
    ]


def _no_credential() -> dict[str, Any]:
    # Matches only when none of the headers a key may come in is present.
    return {
        "header_value_match": {
            "descriptor_key": CREDENTIAL_KEY,
            "descriptor_value": NO_CREDENTIAL,
            "headers": [{"name": name, "present_match": False} for name in CREDENTIAL_HEADERS],
        }
    }


def _per_address(
    bucket: TokenBucket,
    edge: EdgeSettings,
    actions: list[dict[str, Any]],
    entries: list[dict[str, str]],
) -> dict[str, Any]:
    # One bucket per address (after what actions and entries add), LRU-bounded. No default
    # bucket: a request that makes no descriptor (one with a credential, for the no-credential
    # filter) passes the filter.
    return {
        "rate_limits": [{"actions": [*actions, {"remote_address": {}}]}],
        "descriptors": [
            {"entries": [*entries, {"key": CLIENT_IP_KEY}], "token_bucket": _token_bucket(bucket)}
        ],
        "max_dynamic_descriptors": edge.max_client_ips,
    }


def _buckets(name: str, bucket: TokenBucket, edge: EdgeSettings) -> dict[str, Any]:
    if name == "per_client_ip":
        return _per_address(bucket, edge, [], [])
    if name == "per_client_ip_without_credential":
        without = {"key": CREDENTIAL_KEY, "value": NO_CREDENTIAL}
        return _per_address(bucket, edge, [_no_credential()], [without])
    fields: dict[str, Any] = {"token_bucket": _token_bucket(bucket)}
    if name == "per_connection":
        fields["local_rate_limit_per_downstream_connection"] = True
    return fields


def _shared(name: str, edge: EdgeSettings) -> dict[str, Any]:
    # Envoy divides the bucket by the hosts of its local cluster (the Envoys connected to the
    # health service). A connection lives on one replica, so its bucket is never divided.
    if not edge.share_across_replicas or name == "per_connection":
        return {}
    return {"local_cluster_rate_limit": {}}


def edge_filters(edge: EdgeSettings) -> list[dict[str, Any]]:
    """The client listener's first HTTP filters: one local_ratelimit filter per edge bucket.

    Cheapest scope first, so a request refused by one bucket takes no token from the next: a
    flood on one connection leaves its address's budget alone, and refusals per address leave
    the listener's ceiling to everyone else.
    """
    return [
        {
            "name": f"envoy.filters.http.local_ratelimit.{name}",
            "typed_config": typed(
                LOCAL_RATELIMIT,
                stat_prefix=f"{STAT_PREFIX}{name}",
                filter_enabled=_always(f"edge.{name}.enabled"),
                filter_enforced=_always(f"edge.{name}.enforced"),
                response_headers_to_add=_refusal_headers(name, bucket),
                # gRPC clients of the typed API get RESOURCE_EXHAUSTED, the code for a limit,
                # rather than UNAVAILABLE, which their stubs would retry at once.
                rate_limited_as_resource_exhausted=True,
                **_buckets(name, bucket, edge),
                **_shared(name, edge),
            ),
        }
        for name, bucket in edge.buckets().items()
    ]


# What an edge refusal tells the client, filled in by Envoy from the refusal's headers.
EDGE_REFUSAL_MESSAGE = (
    f"Rate limit reached at the gateway's edge (%RESP({EDGE_LIMIT_HEADER.upper()})%). "
    "Please try again in %RESP(RETRY-AFTER)%s."
)


def edge_refusal_filter() -> dict[str, Any]:
    """An access log filter matching the edge tier's refusals (and not the exact tier's)."""
    return {
        "extension_filter": {
            "name": "envoy.access_loggers.extension_filters.cel",
            "typed_config": typed(
                "envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
                expression=f"response.code_details == '{REFUSAL_DETAILS}'",
            ),
        }
    }


def edge_reply_mapper() -> dict[str, Any]:
    """A local_reply_config mapper giving edge refusals OpenAI's 429 body with code `requests`.

    Listed before the listener's generic 429 mapper (the exact tier's refusals), which it would
    otherwise fall into with the message `local_rate_limited`.
    """
    return {
        "filter": edge_refusal_filter(),
        "body_format_override": {
            "json_format": {
                "error": {
                    "message": EDGE_REFUSAL_MESSAGE,
                    "type": "rate_limit_exceeded",
                    "param": None,
                    "code": "requests",
                }
            },
            "content_type": "application/json",
        },
    }


# Envoy reads it from the runtime: it applies to every HTTP connection manager of the process.
IO_CYCLE_KEY = "http.max_requests_per_io_cycle"


def edge_runtime(edge: EdgeSettings) -> dict[str, Any]:
    """Static runtime keys of the edge: how many requests Envoy takes from one connection per
    event loop iteration. A flood's many streams would otherwise fill whole iterations, and
    every other client's request waits for each of the iterations it crosses."""
    if edge.max_requests_per_io_cycle is None:
        return {}
    return {IO_CYCLE_KEY: edge.max_requests_per_io_cycle}


def client_hcm_options(edge: EdgeSettings, request_timeout_s: float) -> dict[str, Any]:
    """The client HCM's fields that bound what one client can make Envoy hold."""
    return {
        # The client address is the peer's (or X-Forwarded-For's, as far as trusted), never a
        # header a client may simply send; the exact tier's remote_address descriptor too.
        "use_remote_address": True,
        "xff_num_trusted_hops": edge.xff_num_trusted_hops,
        # A client's own x-request-id is kept (its logs and ours then name a request alike);
        # Envoy still decides sampling itself, never from that header.
        "preserve_external_request_id": True,
        "max_request_headers_kb": edge.max_request_headers_kb,
        "request_headers_timeout": f"{edge.request_headers_timeout_s}s",
        # Until the whole request is in: route timeouts only start after that.
        "request_timeout": f"{request_timeout_s}s",
        "common_http_protocol_options": {
            "idle_timeout": f"{edge.idle_timeout_s}s",
            # x_llmproxy_tenant must not reach anything that would read it as x-llmproxy-tenant
            # (the trusted headers are stripped by their dashed names only).
            "headers_with_underscores_action": "DROP_HEADER",
        },
        "http2_protocol_options": {
            "max_concurrent_streams": edge.max_concurrent_streams,
            # Envoy's edge guidance: small receive windows, so a client cannot make Envoy
            # buffer hundreds of MiB per connection.
            "initial_stream_window_size": 65_536,
            "initial_connection_window_size": 1_048_576,
        },
    }


def overload_manager(edge: EdgeSettings) -> dict[str, Any]:
    """The bootstrap's overload manager: heap and client connection limits.

    Listeners other than the client's (and the admin interface) set ignore_global_conn_limit,
    so the connection limit is the clients' alone and operators can still reach Envoy.
    """
    heap = "envoy.resource_monitors.fixed_heap"
    return {
        "refresh_interval": "0.25s",
        "resource_monitors": [
            {
                "name": heap,
                "typed_config": typed(
                    "envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig",
                    max_heap_size_bytes=edge.max_heap_mb * 1024 * 1024,
                ),
            },
            {
                "name": "envoy.resource_monitors.global_downstream_max_connections",
                "typed_config": typed(
                    "envoy.extensions.resource_monitors.downstream_connections.v3."
                    "DownstreamConnectionsConfig",
                    max_active_downstream_connections=edge.max_connections,
                ),
            },
        ],
        "actions": [
            {
                "name": action,
                "triggers": [{"name": heap, "threshold": {"value": threshold}}],
            }
            for action, threshold in (
                ("envoy.overload_actions.shrink_heap", SHRINK_HEAP_AT),
                ("envoy.overload_actions.stop_accepting_requests", STOP_REQUESTS_AT),
            )
        ],
    }


def envoys_cluster() -> dict[str, Any]:
    """The local cluster: one host per Envoy replica, from the health service's EDS.

    Envoy never connects to it; the edge buckets count its hosts. Until the health service
    answers it has no host, and Envoy then takes the whole bucket (as with one replica).
    """
    return {
        "name": ENVOYS_CLUSTER,
        "type": "EDS",
        "eds_cluster_config": {"service_name": ENVOYS_CLUSTER, "eds_config": health_eds_config()},
        "connect_timeout": "1s",
    }
