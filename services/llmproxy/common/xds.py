"""Envoy's state-of-the-world xDS streams, as our xDS servers (health's EDS, fault's RTDS) run them.

A stream is bidirectional and either side may speak first: Envoy sends requests (a
subscription naming the resources it wants, none for all of them; an ACK echoing a response's
nonce; a NACK, the same with an error_detail) and the server pushes whenever what it serves
changes. `serve_stream` runs that loop for one Envoy. A service supplies only `XdsResources`:
its type URL and a function building its resources from its state, plus the changes of that
state to wait on.

Every response carries a new nonce, and every new set of resources a new version; Envoy's own
subscription or a fresh request (empty nonce, e.g. after a reconnect) is answered at once, an
ACK is not, and a change is pushed only when the resources built differ from those last sent.
A NACK is logged and counted, never answered: Envoy keeps what it accepted last. With a TTL,
each resource is wrapped in a `Resource` that Envoy drops once the TTL runs out unless a
heartbeat (the same resources and version, sent again every `heartbeat_s`) renewed it, so what
a dead server pushed does not outlive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from prometheus_client import Counter

from llmproxy.common.grpc_types import Context

RESOURCE_TYPE_URL = "type.googleapis.com/envoy.service.discovery.v3.Resource"


@dataclass(frozen=True)
class XdsResources:
    """What one xDS service serves on its streams, and where it logs and counts them."""

    type_url: str
    """The type URL of the resources (and of every request on the stream)."""
    build: Callable[[frozenset[str]], Mapping[str, Message]]
    """The resources by name for the names subscribed (empty: all), built from current state."""
    what: str
    """The resources as log lines name them, e.g. "endpoints"."""
    log: logging.Logger
    """The service's logger."""
    pushes: Counter
    """Counts every response sent."""
    nacks: Counter
    """Counts every response Envoy rejected."""
    ttl_s: float | None = None
    """When set, how long Envoy keeps a resource not renewed by a response or heartbeat."""
    heartbeat_s: float | None = None
    """When set, how long a subscribed stream may stay silent before a heartbeat."""


class SotwStream:
    """One Envoy's stream: what it subscribed to, what it was sent, the versions and nonces."""

    def __init__(self, resources: XdsResources) -> None:
        self._resources = resources
        self._ttl: duration_pb2.Duration | None = None
        if resources.ttl_s is not None:
            self._ttl = duration_pb2.Duration()
            self._ttl.FromMilliseconds(round(resources.ttl_s * 1000))
        self._nonces = itertools.count(1)
        self._versions = itertools.count(1)
        self._warned: set[str] = set()
        self.subscribed: frozenset[str] | None = None
        self.sent: dict[str, bytes] = {}
        self.version = ""
        self.nonce = ""

    def on_request(self, request: discovery_pb2.DiscoveryRequest) -> bool:
        """Take in one request; True if it needs a response."""
        if request.HasField("error_detail"):
            self._resources.nacks.inc()
            self._resources.log.warning(
                "envoy rejected %s",
                self._resources.what,
                extra={"nonce": request.response_nonce, "error": request.error_detail.message},
            )
        names = frozenset(request.resource_names)
        if names != self.subscribed:
            self.subscribed = names
            return True
        # An empty nonce is a fresh request (e.g. Envoy reconnected); otherwise an ACK or NACK.
        return not request.response_nonce

    def response(self, force: bool) -> discovery_pb2.DiscoveryResponse | None:
        """The response to send now: always when force, else only if the resources changed."""
        built = self._build()
        if not force and built == self.sent:
            return None
        return self._new_version(built)

    def snapshot(self) -> discovery_pb2.DiscoveryResponse:
        """A response with every subscribed resource, changed or not."""
        return self._new_version(self._build())

    def heartbeat(self) -> discovery_pb2.DiscoveryResponse:
        """What was sent last, again under its version: it renews the TTLs in Envoy.

        Not the body-less heartbeat of the xDS spec: Envoy's state-of-the-world gRPC client
        drops body-less resources before it renews TTLs, so only a full resend renews one (seen
        with Envoy 1.40).
        """
        return self._respond()

    def _build(self) -> dict[str, bytes]:
        names = self.subscribed or frozenset()
        built = {
            name: message.SerializeToString(deterministic=True)
            for name, message in self._resources.build(names).items()
        }
        for name in sorted(names - built.keys() - self._warned):
            self._warned.add(name)
            self._resources.log.warning(
                "envoy asked for a resource this server does not have",
                extra={"resource": name, "type_url": self._resources.type_url},
            )
        return built

    def _new_version(self, built: dict[str, bytes]) -> discovery_pb2.DiscoveryResponse:
        self.sent = built
        self.version = str(next(self._versions))
        return self._respond()

    def _respond(self) -> discovery_pb2.DiscoveryResponse:
        self.nonce = str(next(self._nonces))
        self._resources.pushes.inc()
        return discovery_pb2.DiscoveryResponse(
            version_info=self.version,
            type_url=self._resources.type_url,
            nonce=self.nonce,
            resources=[self._wrap(name, value) for name, value in self.sent.items()],
        )

    def _wrap(self, name: str, value: bytes) -> any_pb2.Any:
        type_url = self._resources.type_url
        if self._ttl is None:
            return any_pb2.Any(type_url=type_url, value=value)
        resource = discovery_pb2.Resource(
            name=name,
            version=self.version,
            ttl=self._ttl,
            resource=any_pb2.Any(type_url=type_url, value=value),
        )
        return any_pb2.Any(
            type_url=RESOURCE_TYPE_URL, value=resource.SerializeToString(deterministic=True)
        )


DeltaHandler = Callable[[Any, AsyncIterator[Any], Context], AsyncIterator[Any]]


def incremental_not_served(service: str, instead: str) -> DeltaHandler:
    """A servicer's Delta* method: our xDS servers serve the state-of-the-world protocol only."""

    async def delta(
        self: Any, request_iterator: AsyncIterator[Any], context: Context
    ) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED, f"incremental {service} is not served; use {instead}"
        )
        yield discovery_pb2.DiscoveryResponse()  # pragma: no cover - abort raised

    delta.__doc__ = "Not served: this service uses the state-of-the-world protocol."
    return delta


def fetch(
    resources: XdsResources, request: discovery_pb2.DiscoveryRequest
) -> discovery_pb2.DiscoveryResponse:
    """The answer to a one-off fetch (REST-style xDS over gRPC)."""
    stream = SotwStream(resources)
    stream.on_request(request)
    return stream.snapshot()


async def pump_requests(requests: AsyncIterator[Any], into: asyncio.Queue[Any]) -> None:
    """Put every request of the stream into `into`, then None once the client closed it."""
    try:
        async for request in requests:
            await into.put(request)
    finally:
        await into.put(None)  # the client closed its side (or the stream broke)


async def _next_change(changes: AsyncIterator[object]) -> object:
    return await anext(changes)


async def serve_stream(
    resources: XdsResources,
    requests: AsyncIterator[Any],
    context: Context,
    changes: AsyncGenerator[object, None],
) -> AsyncGenerator[discovery_pb2.DiscoveryResponse, None]:
    """Answer one Envoy's stream until it closes; `changes` yields once per change of state.

    Requests are read into a queue so that the loop can wait on a request and a change at
    once. `changes` is closed with the stream.
    """
    stream = SotwStream(resources)
    queue: asyncio.Queue[Any] = asyncio.Queue()
    reader = asyncio.create_task(pump_requests(requests, queue))
    next_request = asyncio.create_task(queue.get())
    next_change = asyncio.create_task(_next_change(changes))
    loop = asyncio.get_running_loop()
    heartbeat_s = resources.heartbeat_s
    last_sent = loop.time()
    try:
        while True:
            wait_s = (
                None if heartbeat_s is None else max(0.0, last_sent + heartbeat_s - loop.time())
            )
            await asyncio.wait(
                {next_request, next_change}, timeout=wait_s, return_when=asyncio.FIRST_COMPLETED
            )
            force = False
            if next_request.done():
                request = next_request.result()
                if request is None:
                    return
                if request.type_url and request.type_url != resources.type_url:
                    await context.abort(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"this stream serves {resources.type_url}, not {request.type_url}",
                    )
                if stream.subscribed is None:
                    resources.log.info(
                        "envoy subscribed to %s", resources.what, extra={"node": request.node.id}
                    )
                force = stream.on_request(request)
                next_request = asyncio.create_task(queue.get())
            if next_change.done():
                next_change.result()
                next_change = asyncio.create_task(_next_change(changes))
            if stream.subscribed is None:
                continue  # nothing asked for yet
            response = stream.response(force)
            due = heartbeat_s is not None and loop.time() >= last_sent + heartbeat_s
            if response is None and due:
                response = stream.heartbeat()
            if response is not None:
                last_sent = loop.time()
                yield response
    finally:
        for task in (reader, next_request, next_change):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await changes.aclose()
