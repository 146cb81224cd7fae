"""Envoy's Runtime Discovery Service for the fault layer (xDS v3, state of the world).

Envoy subscribes to the runtime resource `llmproxy_faults`; this server answers at once and
pushes again whenever the running experiments change, to every connected Envoy. Each response
wraps the resource in a `Resource` with a TTL, and a heartbeat (the same resource resent) renews
it every `heartbeat_s`: when this service dies, Envoy drops the layer, and with it
every fault, once the TTL runs out. Envoy acknowledges a response by echoing its nonce; a
rejection (NACK) is logged and counted, and Envoy keeps the last resource it accepted.
The stream itself is `common.xds`'s; the resource is built by the pure `runtime.build_runtime`
from a Running source: the controller, or (every instance of a fleet) the view.py FaultView,
which serves the leader's running set on every instance.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, Protocol

from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.runtime.v3 import rtds_pb2

from llmproxy._gen.fault.v1 import fault_pb2
from llmproxy.common.contract import RTDS_RESOURCE
from llmproxy.common.grpc_types import Context
from llmproxy.common.xds import XdsResources, fetch, incremental_not_served, serve_stream
from llmproxy.fault import metrics
from llmproxy.fault.runtime import TYPE_URL, build_runtime

log = logging.getLogger(__name__)

SERVICE_NAME = "envoy.service.runtime.v3.RuntimeDiscoveryService"


class Running(Protocol):
    """The running experiments to serve, and a version that changes with them."""

    @property
    def version(self) -> int:
        """Changes whenever running() does."""

    def running(self) -> list[fault_pb2.Experiment]:
        """The running experiments."""

    async def wait_change(self, seen: int) -> int:
        """Wait until the version is not seen; the new version."""


def fault_layer(controller: Running, names: frozenset[str]) -> dict[str, rtds_pb2.Runtime]:
    """The one runtime layer, whatever was named: it holds every running experiment's faults."""
    return {RTDS_RESOURCE: build_runtime(controller.running())}


def runtime_resources(controller: Running, ttl_s: float, heartbeat_s: float) -> XdsResources:
    """What the RTDS streams serve: the fault layer, with a TTL its heartbeats renew."""
    return XdsResources(
        type_url=TYPE_URL,
        build=functools.partial(fault_layer, controller),
        what="the fault runtime",
        log=log,
        pushes=metrics.RTDS_PUSHES,
        nacks=metrics.RTDS_NACKS,
        ttl_s=ttl_s,
        heartbeat_s=heartbeat_s,
    )


async def _changes(controller: Running) -> AsyncGenerator[int, None]:
    seen = controller.version
    while True:
        seen = await controller.wait_change(seen)
        yield seen


class RuntimeDiscoveryServicer:
    """RTDS over gRPC; registered with add_RuntimeDiscoveryServiceServicer_to_server."""

    def __init__(self, controller: Running, ttl_s: float, heartbeat_s: float) -> None:
        self._controller = controller
        self._resources = runtime_resources(controller, ttl_s, heartbeat_s)

    async def StreamRuntime(
        self, request_iterator: AsyncIterator[Any], context: Context
    ) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        """Serve one Envoy's runtime stream until it closes."""
        stream = serve_stream(
            self._resources, request_iterator, context, _changes(self._controller)
        )
        async with contextlib.aclosing(stream) as responses:
            async for response in responses:
                yield response

    DeltaRuntime = incremental_not_served("RTDS", "StreamRuntime")

    async def FetchRuntime(self, request: Any, context: Context) -> discovery_pb2.DiscoveryResponse:
        """One-off fetch of the fault layer (REST-style xDS over gRPC)."""
        return fetch(self._resources, request)
