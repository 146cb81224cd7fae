"""Envoy's Runtime Discovery Service for the fault layer (xDS v3, state of the world).

Envoy subscribes to the runtime resource `llmproxy_faults`; this server answers at once and
pushes again whenever the running experiments change, to every connected Envoy. Each response
wraps the resource in a `Resource` with a TTL, and a heartbeat (the same resource resent) renews
it every `heartbeat_s`: when this service dies, Envoy drops the layer, and with it
every fault, once the TTL runs out. Envoy acknowledges a response by echoing its nonce; a
rejection (NACK) is logged and counted, and Envoy keeps the last resource it accepted.
The resource itself is built by the pure `runtime.build_runtime`.
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
from google.protobuf import any_pb2, duration_pb2

from llmproxy.common.contract import RTDS_RESOURCE
from llmproxy.common.grpc_types import Context
from llmproxy.common.xds import pump_requests
from llmproxy.fault import metrics
from llmproxy.fault.controller import Controller
from llmproxy.fault.runtime import TYPE_URL, build_runtime

log = logging.getLogger(__name__)

SERVICE_NAME = "envoy.service.runtime.v3.RuntimeDiscoveryService"
RESOURCE_TYPE_URL = "type.googleapis.com/envoy.service.discovery.v3.Resource"


class _Stream:
    """One Envoy's stream: the nonces and versions sent on it."""

    def __init__(self, controller: Controller, ttl_s: float) -> None:
        self._controller = controller
        self._ttl = duration_pb2.Duration()
        self._ttl.FromMilliseconds(round(ttl_s * 1000))
        self._nonces = itertools.count(1)
        self._versions = itertools.count(1)
        self.subscribed = False
        self.version = ""

    def _response(self, resource: discovery_pb2.Resource) -> discovery_pb2.DiscoveryResponse:
        metrics.RTDS_PUSHES.inc()
        return discovery_pb2.DiscoveryResponse(
            version_info=self.version,
            type_url=TYPE_URL,
            nonce=str(next(self._nonces)),
            resources=[
                any_pb2.Any(
                    type_url=RESOURCE_TYPE_URL, value=resource.SerializeToString(deterministic=True)
                )
            ],
        )

    def full(self) -> discovery_pb2.DiscoveryResponse:
        """The current resource, with its TTL, under a new version."""
        self.version = str(next(self._versions))
        return self._resource()

    def heartbeat(self) -> discovery_pb2.DiscoveryResponse:
        """The current resource again, same version, renewing its TTL in Envoy.

        Not the body-less heartbeat of the xDS spec: Envoy's state-of-the-world gRPC client
        drops body-less resources before it renews TTLs, so only a full resend renews one
        (seen with Envoy 1.40). It costs Envoy one runtime snapshot rebuild per heartbeat.
        """
        return self._resource()

    def _resource(self) -> discovery_pb2.DiscoveryResponse:
        runtime = build_runtime(self._controller.running())
        return self._response(
            discovery_pb2.Resource(
                name=RTDS_RESOURCE,
                version=self.version,
                ttl=self._ttl,
                resource=any_pb2.Any(
                    type_url=TYPE_URL, value=runtime.SerializeToString(deterministic=True)
                ),
            )
        )

    def on_request(self, request: Any) -> bool:
        """Take in one request; True if it needs a full response."""
        if request.HasField("error_detail"):
            metrics.RTDS_NACKS.inc()
            log.warning(
                "envoy rejected the fault runtime",
                extra={"nonce": request.response_nonce, "error": request.error_detail.message},
            )
            return False
        unknown = sorted(set(request.resource_names) - {RTDS_RESOURCE})
        if unknown:
            log.warning("envoy asked for unknown runtime layers", extra={"names": unknown})
        if not self.subscribed:
            self.subscribed = True
            return True
        # An empty nonce is a fresh request (e.g. Envoy reconnected); otherwise an ACK.
        return not request.response_nonce


class RuntimeDiscoveryServicer:
    """RTDS over gRPC; registered with add_RuntimeDiscoveryServiceServicer_to_server."""

    def __init__(self, controller: Controller, ttl_s: float, heartbeat_s: float) -> None:
        self._controller = controller
        self._ttl_s = ttl_s
        self._heartbeat_s = heartbeat_s

    async def StreamRuntime(
        self, request_iterator: AsyncIterator[Any], context: Context
    ) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        """Serve one Envoy's runtime stream until it closes."""
        stream = _Stream(self._controller, self._ttl_s)
        queue: asyncio.Queue[Any] = asyncio.Queue()
        seen = self._controller.version
        reader = asyncio.create_task(pump_requests(request_iterator, queue))
        next_request = asyncio.create_task(queue.get())
        next_change = asyncio.create_task(self._controller.wait_change(seen))
        loop = asyncio.get_running_loop()
        last_sent = loop.time()
        try:
            while True:
                await asyncio.wait(
                    {next_request, next_change},
                    timeout=max(0.0, last_sent + self._heartbeat_s - loop.time()),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                send_full = False
                if next_request.done():
                    request = next_request.result()
                    if request is None:
                        return
                    if request.type_url and request.type_url != TYPE_URL:
                        await context.abort(
                            grpc.StatusCode.INVALID_ARGUMENT,
                            f"this stream serves {TYPE_URL}, not {request.type_url}",
                        )
                    if not stream.subscribed:
                        log.info("envoy subscribed to faults", extra={"node": request.node.id})
                    send_full = stream.on_request(request)
                    next_request = asyncio.create_task(queue.get())
                if next_change.done():
                    seen = next_change.result()
                    next_change = asyncio.create_task(self._controller.wait_change(seen))
                    send_full = True
                if not stream.subscribed:
                    continue
                if send_full:
                    last_sent = loop.time()
                    yield stream.full()
                elif loop.time() >= last_sent + self._heartbeat_s:
                    last_sent = loop.time()
                    yield stream.heartbeat()
        finally:
            for task in (reader, next_request, next_change):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def DeltaRuntime(
        self, request_iterator: AsyncIterator[Any], context: Context
    ) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        """Not served: the fault layer uses the state-of-the-world protocol."""
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED, "incremental RTDS is not served; use StreamRuntime"
        )
        yield discovery_pb2.DiscoveryResponse()  # pragma: no cover - abort raised

    async def FetchRuntime(self, request: Any, context: Context) -> discovery_pb2.DiscoveryResponse:
        """One-off fetch of the fault layer (REST-style xDS over gRPC)."""
        stream = _Stream(self._controller, self._ttl_s)
        return stream.full()
