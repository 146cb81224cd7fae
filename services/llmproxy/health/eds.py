"""Envoy's Endpoint Discovery Service for the provider clusters (xDS v3, state of the world).

Envoy opens one stream, names the clusters it wants (`provider_<name>`) and acknowledges each
response by echoing its version and nonce. This server answers every new subscription at once
and pushes again whenever a subscribed provider's endpoints change: its health (see `xds`) or
its resolved addresses. A rejected response (NACK) is logged and counted, never resent as is.
The stream itself is `common.xds`'s; the resources are built by the pure functions of `xds`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.service.discovery.v3 import discovery_pb2

from llmproxy.common.grpc_types import Context
from llmproxy.common.xds import XdsResources, fetch, incremental_not_served, serve_stream
from llmproxy.health import metrics, xds
from llmproxy.health.registry import Registry

log = logging.getLogger(__name__)

SERVICE_NAME = "envoy.service.endpoint.v3.EndpointDiscoveryService"


def assignments(
    registry: Registry, names: frozenset[str]
) -> dict[str, endpoint_pb2.ClusterLoadAssignment]:
    """The load assignment of every provider cluster named (none named: every one)."""
    clusters = xds.cluster_names(registry.statuses())
    return {
        cluster: xds.load_assignment(registry.status(provider), registry.target(provider))
        for cluster, provider in clusters.items()
        if not names or cluster in names
    }


def endpoint_resources(registry: Registry) -> XdsResources:
    """What the EDS streams serve: the provider clusters' endpoints."""
    return XdsResources(
        type_url=xds.TYPE_URL,
        build=functools.partial(assignments, registry),
        what="endpoints",
        log=log,
        pushes=metrics.EDS_PUSHES,
        nacks=metrics.EDS_NACKS,
    )


async def _changes(registry: Registry) -> AsyncGenerator[None, None]:
    with registry.subscribe() as subscription:
        while True:
            await subscription.changes()
            yield None


class EndpointDiscoveryServicer:
    """EDS over gRPC; registered with add_EndpointDiscoveryServiceServicer_to_server."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self._resources = endpoint_resources(registry)

    async def StreamEndpoints(
        self, request_iterator: AsyncIterator[Any], context: Context
    ) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        """Answer Envoy's EDS stream until it closes."""
        stream = serve_stream(self._resources, request_iterator, context, _changes(self._registry))
        async with contextlib.aclosing(stream) as responses:
            async for response in responses:
                yield response

    async def FetchEndpoints(
        self, request: Any, context: Context
    ) -> discovery_pb2.DiscoveryResponse:
        """One-off fetch of the requested assignments (REST-style xDS over gRPC)."""
        return fetch(self._resources, request)

    DeltaEndpoints = incremental_not_served("EDS", "StreamEndpoints")
