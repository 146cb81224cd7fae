"""Envoy's Endpoint Discovery Service for the provider clusters (xDS v3, state of the world).

Envoy opens one stream, names the clusters it wants (`provider_<name>`) and acknowledges each
response by echoing its version and nonce. This server answers every new subscription at once
and pushes again whenever a subscribed provider's endpoints change: its health (see `xds`) or
its resolved addresses. A rejected response (NACK) is logged and counted, never resent as is.
The resources themselves are built by the pure functions of `xds`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2

from llmproxy.common.grpc_types import Context
from llmproxy.common.xds import pump_requests
from llmproxy.health import metrics, xds
from llmproxy.health.registry import Registry

log = logging.getLogger(__name__)

SERVICE_NAME = "envoy.service.endpoint.v3.EndpointDiscoveryService"


class _Stream:
    """One Envoy's subscription on one stream: what it asked for and what it was sent."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self._nonces = itertools.count(1)
        self._versions = itertools.count(1)
        self.subscribed: set[str] | None = None
        self.sent: dict[str, bytes] = {}
        self.nonce = ""
        self._warned: set[str] = set()

    def _wanted(self) -> dict[str, str]:
        clusters = xds.cluster_names(self._registry.statuses())
        if not self.subscribed:  # a wildcard subscription: every provider
            return clusters
        for name in sorted(self.subscribed - clusters.keys() - self._warned):
            self._warned.add(name)
            log.warning("envoy asked for an unknown cluster", extra={"cluster": name})
        return {c: p for c, p in clusters.items() if c in self.subscribed}

    def _assignments(self) -> dict[str, bytes]:
        return {
            cluster: xds.load_assignment(
                self._registry.status(provider), self._registry.target(provider)
            ).SerializeToString(deterministic=True)
            for cluster, provider in self._wanted().items()
        }

    def response(self, force: bool) -> discovery_pb2.DiscoveryResponse | None:
        """The response to send now: always when force (a new subscription), else only if a
        subscribed assignment changed since the last one sent."""
        assignments = self._assignments()
        if not force and assignments == self.sent:
            return None
        return self._respond(assignments)

    def snapshot(self) -> discovery_pb2.DiscoveryResponse:
        """A response with every subscribed assignment, changed or not."""
        return self._respond(self._assignments())

    def _respond(self, assignments: dict[str, bytes]) -> discovery_pb2.DiscoveryResponse:
        self.sent = assignments
        self.nonce = str(next(self._nonces))
        metrics.EDS_PUSHES.inc()
        return discovery_pb2.DiscoveryResponse(
            version_info=str(next(self._versions)),
            type_url=xds.TYPE_URL,
            nonce=self.nonce,
            resources=[
                any_pb2.Any(type_url=xds.TYPE_URL, value=value) for value in assignments.values()
            ],
        )

    def on_request(self, request: Any) -> bool:
        """Take in one request; True if it needs a response."""
        if request.HasField("error_detail"):
            metrics.EDS_NACKS.inc()
            log.warning(
                "envoy rejected endpoints",
                extra={"nonce": request.response_nonce, "error": request.error_detail.message},
            )
        names = set(request.resource_names)
        if names != self.subscribed:
            self.subscribed = names
            return True
        # An empty nonce is a fresh request (e.g. Envoy reconnected); otherwise an ACK or NACK.
        return not request.response_nonce


class EndpointDiscoveryServicer:
    """EDS over gRPC; registered with add_EndpointDiscoveryServiceServicer_to_server."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry

    async def StreamEndpoints(
        self, request_iterator: AsyncIterator[Any], context: Context
    ) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        """Answer Envoy's EDS stream until it closes."""
        stream = _Stream(self._registry)
        queue: asyncio.Queue[Any] = asyncio.Queue()
        with self._registry.subscribe() as subscription:
            reader = asyncio.create_task(pump_requests(request_iterator, queue))
            next_request = asyncio.create_task(queue.get())
            next_change = asyncio.create_task(subscription.changes())
            try:
                while True:
                    await asyncio.wait(
                        {next_request, next_change}, return_when=asyncio.FIRST_COMPLETED
                    )
                    force = False
                    if next_request.done():
                        request = next_request.result()
                        if request is None:
                            return
                        if request.type_url and request.type_url != xds.TYPE_URL:
                            await context.abort(
                                grpc.StatusCode.INVALID_ARGUMENT,
                                f"this stream serves {xds.TYPE_URL}, not {request.type_url}",
                            )
                        if stream.subscribed is None:
                            log.info("envoy subscribed", extra={"node": request.node.id})
                        force = stream.on_request(request)
                        next_request = asyncio.create_task(queue.get())
                    if next_change.done():
                        next_change.result()
                        next_change = asyncio.create_task(subscription.changes())
                    if stream.subscribed is None:
                        continue  # nothing asked for yet
                    response = stream.response(force)
                    if response is not None:
                        yield response
            finally:
                for task in (reader, next_request, next_change):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task

    async def FetchEndpoints(
        self, request: Any, context: Context
    ) -> discovery_pb2.DiscoveryResponse:
        """One-off fetch of the requested assignments (REST-style xDS over gRPC)."""
        stream = _Stream(self._registry)
        stream.on_request(request)
        return stream.snapshot()

    async def DeltaEndpoints(
        self, request_iterator: AsyncIterator[Any], context: Context
    ) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        """Not served: the provider clusters use the state-of-the-world protocol."""
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED, "incremental EDS is not served; use StreamEndpoints"
        )
        yield discovery_pb2.DiscoveryResponse()  # pragma: no cover - abort raised
