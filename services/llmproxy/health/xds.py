"""Envoy's endpoint assignments for the provider clusters: pure functions of provider health.

One ClusterLoadAssignment per provider cluster (`provider_<name>`), one endpoint per resolved
address, each with the provider's health as `health_status`: Envoy routes to HEALTHY, UNKNOWN
(not probed yet) and DEGRADED endpoints, and answers 503 at once for UNHEALTHY and DRAINING ones
(the clusters have no panic threshold).

One more, ENVOYS_CLUSTER, has an endpoint per Envoy replica connected (see `fleet`): the local
cluster each Envoy divides its edge buckets by.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from envoy.config.core.v3 import address_pb2, health_check_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2

from llmproxy.common.contract import ENVOYS_CLUSTER, provider_cluster_name
from llmproxy.health.dns import Target
from llmproxy.health.fleet import Peer
from llmproxy.health.state import ProviderStatus

TYPE_URL = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"

_HEALTH = {
    "unspecified": health_check_pb2.UNKNOWN,
    "healthy": health_check_pb2.HEALTHY,
    "degraded": health_check_pb2.DEGRADED,
    "unhealthy": health_check_pb2.UNHEALTHY,
}


def eds_health(status: ProviderStatus) -> int:
    """The health_status Envoy gets for status."""
    if status.maintenance:
        return int(health_check_pb2.DRAINING)
    if not status.available:
        return int(health_check_pb2.UNHEALTHY)
    return int(_HEALTH[status.state])


def load_assignment(
    status: ProviderStatus, target: Target | None
) -> endpoint_pb2.ClusterLoadAssignment:
    """The endpoints of status's provider cluster (none until its address is known)."""
    assignment = endpoint_pb2.ClusterLoadAssignment(cluster_name=provider_cluster_name(status.name))
    if target is None or not target.addresses:
        return assignment
    locality = assignment.endpoints.add()
    health = eds_health(status)
    for address in target.addresses:
        locality.lb_endpoints.append(
            endpoint_components_pb2.LbEndpoint(
                endpoint=endpoint_components_pb2.Endpoint(
                    address=address_pb2.Address(
                        socket_address=address_pb2.SocketAddress(
                            address=address, port_value=target.port
                        )
                    ),
                    # Envoy's auto_host_rewrite sends this as Host.
                    hostname=target.host,
                ),
                health_status=health,
            )
        )
    return assignment


def cluster_names(statuses: Iterable[ProviderStatus]) -> dict[str, str]:
    """Provider name by cluster name."""
    return {provider_cluster_name(s.name): s.name for s in statuses}


def envoys_assignment(members: Mapping[str, Peer | None]) -> endpoint_pb2.ClusterLoadAssignment:
    """ENVOYS_CLUSTER's endpoints: one per Envoy node, at the address its stream comes from.

    A node whose address is unknown (not an IP peer) gets a pipe address named after it, so
    that every node is a host of its own.
    """
    assignment = endpoint_pb2.ClusterLoadAssignment(cluster_name=ENVOYS_CLUSTER)
    if not members:
        return assignment
    locality = assignment.endpoints.add()
    for node, peer in members.items():
        if peer is None:
            address = address_pb2.Address(pipe=address_pb2.Pipe(path=f"@llmproxy-envoy-{node}"))
        else:
            address = address_pb2.Address(
                socket_address=address_pb2.SocketAddress(address=peer.address, port_value=peer.port)
            )
        locality.lb_endpoints.append(
            endpoint_components_pb2.LbEndpoint(
                endpoint=endpoint_components_pb2.Endpoint(address=address, hostname=node)
            )
        )
    return assignment
