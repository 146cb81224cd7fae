"""The state-of-the-world xDS stream loop: subscribe, ACK, NACK, push on change, TTL, close."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

import grpc
import pytest
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import wrappers_pb2
from prometheus_client import CollectorRegistry, Counter

from llmproxy.common.xds import (
    RESOURCE_TYPE_URL,
    XdsResources,
    fetch,
    incremental_not_served,
    serve_stream,
)
from tests.harness.waiting import eventually
from tests.unit.grpc_fakes import Aborted, FakeContext

TYPE_URL = "type.googleapis.com/google.protobuf.StringValue"
log = logging.getLogger("tests.xds")


class State:
    """A service's state: resources by name, and a notification per change."""

    def __init__(self) -> None:
        self.values = {"a": "1", "b": "2"}
        self.seen = 0
        self.closed = False
        self._changed: asyncio.Queue[None] = asyncio.Queue()
        self.metrics = CollectorRegistry()
        self.pushes = Counter("test_xds_pushes", "Responses.", registry=self.metrics)
        self.nacks = Counter("test_xds_nacks", "NACKs.", registry=self.metrics)

    def build(self, names: frozenset[str]) -> dict[str, wrappers_pb2.StringValue]:
        return {
            name: wrappers_pb2.StringValue(value=value)
            for name, value in self.values.items()
            if not names or name in names
        }

    def change(self, name: str, value: str) -> None:
        self.values[name] = value
        self._changed.put_nowait(None)

    async def changes(self) -> AsyncGenerator[None, None]:
        try:
            while True:
                await self._changed.get()
                yield None
                self.seen += 1  # the stream came back for more: it has handled this change
        finally:
            self.closed = True

    def resources(
        self, ttl_s: float | None = None, heartbeat_s: float | None = None
    ) -> XdsResources:
        return XdsResources(
            type_url=TYPE_URL,
            build=self.build,
            what="values",
            log=log,
            pushes=self.pushes,
            nacks=self.nacks,
            ttl_s=ttl_s,
            heartbeat_s=heartbeat_s,
        )

    def count(self, name: str) -> float:
        return self.metrics.get_sample_value(name) or 0.0


def request(
    *names: str, nonce: str = "", error: str = "", type_url: str = TYPE_URL
) -> discovery_pb2.DiscoveryRequest:
    found = discovery_pb2.DiscoveryRequest(
        resource_names=names, type_url=type_url, response_nonce=nonce
    )
    found.node.id = "envoy-1"
    if error:
        found.error_detail.message = error
        found.error_detail.code = 3
    return found


class Envoy:
    """Envoy's side of one stream, reading responses as they come, as gRPC does."""

    def __init__(self, state: State, resources: XdsResources) -> None:
        self.requests: asyncio.Queue[discovery_pb2.DiscoveryRequest | None] = asyncio.Queue()
        self._received: asyncio.Queue[discovery_pb2.DiscoveryResponse | Exception] = asyncio.Queue()
        context: Any = FakeContext()
        responses = serve_stream(resources, self._requests(), context, state.changes())
        self._reader = asyncio.create_task(self._read(responses))

    async def _requests(self) -> AsyncIterator[discovery_pb2.DiscoveryRequest]:
        while (found := await self.requests.get()) is not None:
            yield found

    async def _read(self, responses: AsyncGenerator[discovery_pb2.DiscoveryResponse, None]) -> None:
        try:
            async for response in responses:
                await self._received.put(response)
        except Exception as exc:  # handed to the test, which raises it
            await self._received.put(exc)
        else:
            await self._received.put(StopAsyncIteration())

    def send(self, found: discovery_pb2.DiscoveryRequest | None) -> None:
        self.requests.put_nowait(found)

    async def receive(self) -> discovery_pb2.DiscoveryResponse:
        async with asyncio.timeout(5):
            found = await self._received.get()
        if isinstance(found, Exception):
            raise found
        return found

    async def close(self) -> None:
        """What gRPC does when the call ends: cancel the handler."""
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)


Streams = Callable[[State, XdsResources], Envoy]


@pytest.fixture
async def streams() -> AsyncIterator[Streams]:
    """Opens streams; each is closed after the test."""
    opened: list[Envoy] = []

    def open_stream(state: State, resources: XdsResources) -> Envoy:
        opened.append(Envoy(state, resources))
        return opened[-1]

    yield open_stream
    for envoy in opened:
        await envoy.close()


def values(response: discovery_pb2.DiscoveryResponse) -> list[str]:
    found = []
    for wrapped in response.resources:
        value = wrappers_pb2.StringValue()
        assert wrapped.Unpack(value)
        found.append(value.value)
    return found


async def test_a_subscription_is_answered_and_an_ack_is_not(streams: Streams) -> None:
    state = State()
    envoy = streams(state, state.resources())
    envoy.send(request("a"))
    first = await envoy.receive()
    assert (first.version_info, first.nonce, first.type_url) == ("1", "1", TYPE_URL)
    assert values(first) == ["1"]
    envoy.send(request("a", nonce=first.nonce))  # ACK
    state.change("a", "10")
    pushed = await envoy.receive()
    assert (pushed.version_info, pushed.nonce, values(pushed)) == ("2", "2", ["10"])
    envoy.send(request("a", nonce=pushed.nonce))  # ACK
    envoy.send(None)
    with pytest.raises(StopAsyncIteration):  # the stream ended without answering the ACKs
        await envoy.receive()
    assert state.count("test_xds_pushes_total") == 2


async def test_only_a_change_to_what_was_subscribed_is_pushed(streams: Streams) -> None:
    state = State()
    envoy = streams(state, state.resources())
    envoy.send(request("a"))
    await envoy.receive()
    state.change("b", "20")

    async def seen() -> int:
        return state.seen

    await eventually(seen, lambda n: n == 1)  # the stream handled b's change
    state.change("a", "10")
    pushed = await envoy.receive()
    assert (pushed.version_info, values(pushed)) == ("2", ["10"])


async def test_a_nack_is_logged_and_counted_and_a_fresh_request_is_answered(
    streams: Streams, caplog: pytest.LogCaptureFixture
) -> None:
    state = State()
    envoy = streams(state, state.resources())
    envoy.send(request())  # a wildcard subscription: everything
    first = await envoy.receive()
    assert values(first) == ["1", "2"]
    with caplog.at_level(logging.WARNING, logger=log.name):
        envoy.send(request(nonce=first.nonce, error="bad value"))
        envoy.send(request())  # Envoy reconnected: an empty nonce
        again = await envoy.receive()
    assert (again.version_info, again.nonce) == ("2", "2")  # the NACK got no answer
    assert state.count("test_xds_nacks_total") == 1
    (line,) = caplog.records
    assert line.getMessage() == "envoy rejected values"
    assert line.error == "bad value"  # type: ignore[attr-defined]


async def test_unknown_names_are_left_out_and_logged_once(
    streams: Streams, caplog: pytest.LogCaptureFixture
) -> None:
    state = State()
    envoy = streams(state, state.resources())
    with caplog.at_level(logging.WARNING, logger=log.name):
        envoy.send(request("a", "zz"))
        first = await envoy.receive()
        envoy.send(request("a", "zz"))
        again = await envoy.receive()
    assert values(first) == values(again) == ["1"]
    assert [r.resource for r in caplog.records] == ["zz"]  # type: ignore[attr-defined]


async def test_with_a_ttl_resources_are_wrapped_and_heartbeats_renew_them(streams: Streams) -> None:
    state = State()
    envoy = streams(state, state.resources(ttl_s=2, heartbeat_s=0.05))
    envoy.send(request("a"))
    first = await envoy.receive()
    heartbeat = await envoy.receive()  # nothing changed: the same resource after heartbeat_s
    assert heartbeat.version_info == first.version_info
    assert heartbeat.nonce != first.nonce
    (wrapped,) = heartbeat.resources
    assert wrapped.type_url == RESOURCE_TYPE_URL
    resource = discovery_pb2.Resource()
    assert wrapped.Unpack(resource)
    assert (resource.name, resource.version, resource.ttl.ToMilliseconds()) == ("a", "1", 2000)
    value = wrappers_pb2.StringValue()
    assert resource.resource.Unpack(value)
    assert value.value == "1"


async def test_a_request_of_another_type_is_refused(streams: Streams) -> None:
    state = State()
    envoy = streams(state, state.resources())
    envoy.send(request("a", type_url="type.googleapis.com/envoy.config.cluster.v3.Cluster"))
    with pytest.raises(Aborted) as aborted:
        await envoy.receive()
    assert aborted.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert state.closed


async def test_the_stream_ends_when_envoy_closes_it_and_stops_watching_changes(
    streams: Streams,
) -> None:
    state = State()
    envoy = streams(state, state.resources())
    envoy.send(request("a"))
    await envoy.receive()
    envoy.send(None)
    with pytest.raises(StopAsyncIteration):
        await envoy.receive()
    assert state.closed


def test_a_fetch_answers_once_with_what_it_names() -> None:
    state = State()
    response = fetch(state.resources(), request("b"))
    assert (response.version_info, response.nonce, values(response)) == ("1", "1", ["2"])


async def no_requests() -> AsyncIterator[discovery_pb2.DeltaDiscoveryRequest]:
    for found in ():
        yield found


async def test_the_incremental_protocol_is_refused_with_what_to_use_instead() -> None:
    delta = incremental_not_served("EDS", "StreamEndpoints")
    context: Any = FakeContext()
    with pytest.raises(Aborted) as aborted:
        await anext(delta(None, no_requests(), context))
    assert aborted.value.code == grpc.StatusCode.UNIMPLEMENTED
    assert aborted.value.details == "incremental EDS is not served; use StreamEndpoints"
