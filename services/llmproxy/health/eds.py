"""Envoy's Endpoint Discovery Service for the provider clusters and the Envoys' own (xDS v3).

Envoy opens a stream, names the clusters it wants (`provider_<name>`, ENVOYS_CLUSTER) and
acknowledges each response by echoing its version and nonce. This server answers every new
subscription at once and pushes again whenever a subscribed cluster's endpoints change: a
provider's health (see `xds`) or resolved addresses, or the Envoy replicas connected (see
`fleet`: an Envoy is a member while a stream of its is open, to this instance or another). A
rejected response (NACK) is logged and counted, never resent as is. The stream itself is
`common.xds`'s; the resources are built by the pure functions of `xds`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.service.discovery.v3 import discovery_pb2

from llmproxy.common.contract import ENVOYS_CLUSTER
from llmproxy.common.grpc_types import Context
from llmproxy.common.xds import XdsResources, fetch, incremental_not_served, serve_stream
from llmproxy.health import metrics, xds
from llmproxy.health.fleet import Fleet, parse_peer
from llmproxy.health.registry import Registry

log = logging.getLogger(__name__)

SERVICE_NAME = "envoy.service.endpoint.v3.EndpointDiscoveryService"


def assignments(
    registry: Registry, fleet: Fleet, names: frozenset[str]
) -> dict[str, endpoint_pb2.ClusterLoadAssignment]:
    """The load assignment of every cluster named (none named: every one)."""
    clusters = xds.cluster_names(registry.statuses())
    built = {
        cluster: xds.load_assignment(registry.status(provider), registry.target(provider))
        for cluster, provider in clusters.items()
        if not names or cluster in names
    }
    if not names or ENVOYS_CLUSTER in names:
        built[ENVOYS_CLUSTER] = xds.envoys_assignment(fleet.members())
    return built


def endpoint_resources(registry: Registry, fleet: Fleet) -> XdsResources:
    """What the EDS streams serve: the provider clusters' endpoints and the Envoys'."""
    return XdsResources(
        type_url=xds.TYPE_URL,
        build=functools.partial(assignments, registry, fleet),
        what="endpoints",
        log=log,
        pushes=metrics.EDS_PUSHES,
        nacks=metrics.EDS_NACKS,
    )


async def _changes(registry: Registry, fleet: Fleet) -> AsyncGenerator[None, None]:
    membership = fleet.event()
    try:
        with registry.subscribe() as subscription:
            while True:
                providers = asyncio.ensure_future(subscription.changes())
                members = asyncio.ensure_future(membership.wait())
                try:
                    await asyncio.wait({providers, members}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for waiter in (providers, members):
                        waiter.cancel()
                membership.clear()
                yield None
    finally:
        fleet.forget(membership)


async def _joining(
    requests: AsyncIterator[Any], fleet: Fleet, stream: int, peer: str, nodes: list[str]
) -> AsyncIterator[Any]:
    # The node id comes with the stream's first request only (set_node_on_first_message_only).
    async for request in requests:
        if not nodes and request.node.id:
            nodes.append(request.node.id)
            fleet.join(request.node.id, stream, parse_peer(peer))
        yield request


class EndpointDiscoveryServicer:
    """EDS over gRPC; registered with add_EndpointDiscoveryServiceServicer_to_server."""

    def __init__(self, registry: Registry, fleet: Fleet | None = None) -> None:
        self._registry = registry
        self._fleet = fleet if fleet is not None else Fleet()
        self._resources = endpoint_resources(registry, self._fleet)
        self._streams = itertools.count(1)

    async def StreamEndpoints(
        self, request_iterator: AsyncIterator[Any], context: Context
    ) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        """Answer Envoy's EDS stream until it closes; its node is a member meanwhile."""
        stream_id = next(self._streams)
        nodes: list[str] = []
        requests = _joining(request_iterator, self._fleet, stream_id, context.peer(), nodes)
        changes = _changes(self._registry, self._fleet)
        stream = serve_stream(self._resources, requests, context, changes)
        try:
            async with contextlib.aclosing(stream) as responses:
                async for response in responses:
                    yield response
        finally:
            for node in nodes:
                self._fleet.leave(node, stream_id)

    async def FetchEndpoints(
        self, request: Any, context: Context
    ) -> discovery_pb2.DiscoveryResponse:
        """One-off fetch of the requested assignments (REST-style xDS over gRPC)."""
        return fetch(self._resources, request)

    DeltaEndpoints = incremental_not_served("EDS", "StreamEndpoints")
