"""Envoy's side of fault injection: fault filters driven by runtime keys the fault service sets.

Every fault filter defaults to 0 percent, so without the fault service's runtime layer (RTDS,
resource `llmproxy_faults`) nothing happens. Runtime keys, by target:

- route `<r>` (client listener): `fault.route.<r>.delay.fixed_delay_percent`,
  `.delay.fixed_duration_ms`, `.abort.abort_percent`, `.abort.http_status`,
  `.rate_limit.response_percent`, and for gRPC-status aborts `.grpc_abort.abort_percent`,
  `.abort.grpc_status` (a second filter: one filter aborts with either an HTTP or a gRPC status,
  whichever its config names; it applies to gRPC clients' methods only).
- provider `<p>` (egress listener): the same under `fault.provider.<p>.` (HTTP aborts only).
- tenant `<t>`: Envoy's own per-downstream-cluster keys `fault.http.tenant-<t>.delay.*` and
  `.abort.*`, read when the request carries `x-envoy-downstream-service-cluster`, which the
  authz service sets to `tenant-<t>` (clients' copies are stripped before ext_authz). With that
  header present Envoy reads only the per-cluster percent keys, so the header is removed again
  right after the tenant filter: the route filters then see their own keys.
"""

from __future__ import annotations

from typing import Any

from llmproxy.common.contract import (
    FAULT_CLUSTER_HEADER,
    RTDS_RESOURCE,
    provider_fault_prefix,
    route_fault_prefix,
    service_cluster_name,
)
from llmproxy.envoyconf.clusters import typed

HTTP_FAULT = "envoy.extensions.filters.http.fault.v3.HTTPFault"
TENANT_FILTER = "fault_tenant"
ROUTE_FILTER = "fault_route"
ROUTE_GRPC_FILTER = "fault_route_grpc"
PROVIDER_FILTER = "fault_provider"
# The runtime layer blocks Envoy's start until its first answer: do not wait long for it.
RTDS_INITIAL_FETCH_TIMEOUT = "2s"
DEFAULT_ABORT_HTTP_STATUS = 503
DEFAULT_ABORT_GRPC_STATUS = 14  # UNAVAILABLE


def _zero() -> dict[str, Any]:
    return {"numerator": 0, "denominator": "HUNDRED"}


def http_fault(prefix: str, bandwidth_kbps: int) -> dict[str, Any]:
    """A fault filter config with delay, HTTP abort and bandwidth limit, keys under prefix."""
    return typed(
        HTTP_FAULT,
        # Envoy requires a positive default delay; the runtime key sets the real one.
        delay={"fixed_delay": "0.001s", "percentage": _zero()},
        abort={"http_status": DEFAULT_ABORT_HTTP_STATUS, "percentage": _zero()},
        response_rate_limit={"fixed_limit": {"limit_kbps": bandwidth_kbps}, "percentage": _zero()},
        delay_percent_runtime=f"{prefix}delay.fixed_delay_percent",
        delay_duration_runtime=f"{prefix}delay.fixed_duration_ms",
        abort_percent_runtime=f"{prefix}abort.abort_percent",
        abort_http_status_runtime=f"{prefix}abort.http_status",
        response_rate_limit_percent_runtime=f"{prefix}rate_limit.response_percent",
    )


def grpc_fault(prefix: str) -> dict[str, Any]:
    """A fault filter config that aborts with a gRPC status, keys under prefix."""
    return typed(
        HTTP_FAULT,
        abort={"grpc_status": DEFAULT_ABORT_GRPC_STATUS, "percentage": _zero()},
        abort_percent_runtime=f"{prefix}grpc_abort.abort_percent",
        abort_grpc_status_runtime=f"{prefix}abort.grpc_status",
    )


def client_fault_filters(bandwidth_kbps: int) -> list[dict[str, Any]]:
    """The client listener's fault filters, after authz and transcoding, before the router."""
    return [
        # Keys of its own are never set: only the per-tenant keys Envoy derives apply.
        {"name": TENANT_FILTER, "typed_config": http_fault("fault.tenant_filter.", bandwidth_kbps)},
        {
            "name": "fault_cluster_header_removal",
            "typed_config": typed(
                "envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
                mutations={"request_mutations": [{"remove": FAULT_CLUSTER_HEADER}]},
            ),
        },
        {"name": ROUTE_FILTER, "typed_config": http_fault("fault.route.unnamed.", bandwidth_kbps)},
        {"name": ROUTE_GRPC_FILTER, "typed_config": grpc_fault("fault.route.unnamed.")},
    ]


def client_route_faults(route: str, bandwidth_kbps: int, grpc_clients: bool) -> dict[str, Any]:
    """typed_per_filter_config of a client route: its own runtime keys.

    gRPC-status aborts apply only to the methods gRPC clients call (ChatService): Envoy builds
    a local reply's form from the request as the client sent it, so on a transcoded REST
    request a gRPC-status abort would be a plain-text 200. REST clients get HTTP aborts.
    """
    prefix = route_fault_prefix(route)
    grpc = (
        grpc_fault(prefix)
        if grpc_clients
        else typed("envoy.config.route.v3.FilterConfig", disabled=True)
    )
    return {ROUTE_FILTER: http_fault(prefix, bandwidth_kbps), ROUTE_GRPC_FILTER: grpc}


def egress_fault_filter(bandwidth_kbps: int) -> dict[str, Any]:
    """The egress listener's fault filter (per-provider keys come from each route)."""
    return {
        "name": PROVIDER_FILTER,
        "typed_config": http_fault("fault.provider.unnamed.", bandwidth_kbps),
    }


def provider_route_faults(provider: str, bandwidth_kbps: int) -> dict[str, Any]:
    """typed_per_filter_config of a provider's egress route: its own runtime keys."""
    return {PROVIDER_FILTER: http_fault(provider_fault_prefix(provider), bandwidth_kbps)}


def rtds_layer() -> dict[str, Any]:
    """The runtime layer the fault service serves (between the static and the admin layer)."""
    return {
        "name": "rtds",
        "rtds_layer": {
            "name": RTDS_RESOURCE,
            "rtds_config": {
                "resource_api_version": "V3",
                "initial_fetch_timeout": RTDS_INITIAL_FETCH_TIMEOUT,
                "api_config_source": {
                    "api_type": "GRPC",
                    "transport_api_version": "V3",
                    "grpc_services": [
                        {
                            "envoy_grpc": {
                                "cluster_name": service_cluster_name("fault"),
                                # Back within a second of a restarted fault service (Envoy's
                                # default backoff grows to 30 s).
                                "retry_policy": {
                                    "retry_back_off": {
                                        "base_interval": "0.25s",
                                        "max_interval": "1s",
                                    }
                                },
                            }
                        }
                    ],
                    "set_node_on_first_message_only": True,
                },
            },
        },
    }
