"""The Envoy replicas on health's EDS: membership by node, and the local cluster it makes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.service.discovery.v3 import discovery_pb2

from llmproxy.common.contract import ENVOYS_CLUSTER
from llmproxy.common.xds import SotwStream
from llmproxy.health import xds
from llmproxy.health.eds import EndpointDiscoveryServicer, endpoint_resources
from llmproxy.health.fleet import Fleet, Peer, merge, parse_peer
from llmproxy.health.registry import Registry
from tests.unit.grpc_fakes import FakeContext


def test_grpc_peers_are_parsed_and_others_are_not() -> None:
    assert parse_peer("ipv4:127.0.0.1:40001") == Peer("127.0.0.1", 40001)
    assert parse_peer("ipv6:[::1]:40002") == Peer("::1", 40002)
    assert parse_peer("unix:/tmp/sock") is None
    assert parse_peer("ipv4:127.0.0.1:x") is None


def test_a_node_is_a_member_while_any_of_its_streams_is_open() -> None:
    fleet = Fleet()
    changed = fleet.event()
    fleet.join("b", 1, Peer("10.0.0.2", 1))
    fleet.join("a", 2, Peer("10.0.0.1", 1))
    fleet.join("a", 3, Peer("10.0.0.1", 2))
    assert changed.is_set()
    assert fleet.members() == {"a": Peer("10.0.0.1", 1), "b": Peer("10.0.0.2", 1)}
    fleet.leave("a", 2)
    assert fleet.members() == {"a": Peer("10.0.0.1", 2), "b": Peer("10.0.0.2", 1)}
    fleet.leave("a", 3)
    fleet.leave("a", 3)  # twice, or a stream never seen: nothing happens
    fleet.leave("c", 9)
    assert list(fleet.members()) == ["b"]
    fleet.forget(changed)
    changed.clear()
    fleet.leave("b", 1)
    assert fleet.members() == {}
    assert not changed.is_set()


def test_the_views_merge_into_one_member_per_node_whoever_merges_them() -> None:
    a, b = Peer("10.0.0.1", 1), Peer("10.0.0.2", 2)
    views = {
        "health-2": {"envoy-b": b, "envoy-a": Peer("10.0.0.1", 9)},  # envoy-a moved here
        "health-1": {"envoy-a": a},
        "health-3": {},
    }
    merged = merge(views)
    assert merged == {"envoy-a": a, "envoy-b": b}
    assert list(merged) == ["envoy-a", "envoy-b"]
    assert merge(dict(reversed(views.items()))) == merged  # whatever order they came in
    assert merge({}) == {}
    # Each instance merges its own connections with the others' views: the same members.
    first, second = Fleet("health-1"), Fleet("health-2")
    first.join("envoy-a", 1, a)
    second.join("envoy-b", 1, b)
    second.join("envoy-a", 2, Peer("10.0.0.1", 9))
    first.set_others({"health-2": second.connected()})
    second.set_others({"health-1": first.connected(), "health-2": {"stale": None}})
    assert first.members() == second.members() == {"envoy-a": a, "envoy-b": b}
    assert first.connected() == {"envoy-a": a}


def test_the_others_views_notify_the_streams_only_when_they_change() -> None:
    fleet = Fleet("health-1")
    streams, local = fleet.event(), fleet.event(local=True)
    fleet.set_others({"health-2": {"envoy-b": None}})
    assert streams.is_set()
    assert not local.is_set()
    assert list(fleet.members()) == ["envoy-b"]
    streams.clear()
    fleet.set_others({"health-2": {"envoy-b": None}})
    assert not streams.is_set()
    fleet.join("envoy-a", 1, None)  # a local change is both
    assert streams.is_set()
    assert local.is_set()
    fleet.set_others({})  # Redis unreachable: this instance's Envoys only
    assert list(fleet.members()) == ["envoy-a"]
    fleet.forget(local)
    local.clear()
    fleet.leave("envoy-a", 1)
    assert not local.is_set()


def test_every_member_is_a_host_of_its_own() -> None:
    assignment = xds.envoys_assignment({"a": Peer("127.0.0.1", 5), "b": None, "c": Peer("::1", 6)})
    assert assignment.cluster_name == ENVOYS_CLUSTER
    endpoints = [e.endpoint for e in assignment.endpoints[0].lb_endpoints]
    assert [e.hostname for e in endpoints] == ["a", "b", "c"]
    assert endpoints[0].address.socket_address.address == "127.0.0.1"
    assert endpoints[0].address.socket_address.port_value == 5
    assert endpoints[1].address.pipe.path == "@llmproxy-envoy-b"
    assert not xds.envoys_assignment({}).endpoints


def test_a_new_member_is_pushed_to_the_streams_watching_the_envoys() -> None:
    fleet = Fleet()
    stream = SotwStream(endpoint_resources(Registry([]), fleet))
    stream.on_request(discovery_pb2.DiscoveryRequest(resource_names=[ENVOYS_CLUSTER]))
    first = stream.response(force=True)
    assert first is not None
    assert stream.response(force=False) is None
    fleet.join("a", 1, Peer("127.0.0.1", 5))
    pushed = stream.response(force=False)
    assert pushed is not None
    assert len(pushed.resources) == 1


class EnvoyNode:
    """One Envoy's EDS stream on the servicer, subscribed to the Envoys' cluster."""

    def __init__(self, servicer: EndpointDiscoveryServicer, node: str) -> None:
        self.requests: asyncio.Queue[discovery_pb2.DiscoveryRequest | None] = asyncio.Queue()
        self.received: asyncio.Queue[discovery_pb2.DiscoveryResponse] = asyncio.Queue()
        self.requests.put_nowait(
            discovery_pb2.DiscoveryRequest(
                node=base_pb2.Node(id=node), resource_names=[ENVOYS_CLUSTER]
            )
        )
        context: Any = FakeContext()
        self.task = asyncio.create_task(
            self._read(servicer.StreamEndpoints(self._requests(), context))
        )

    async def _requests(self) -> AsyncIterator[discovery_pb2.DiscoveryRequest]:
        while (found := await self.requests.get()) is not None:
            yield found

    async def _read(self, responses: AsyncIterator[discovery_pb2.DiscoveryResponse]) -> None:
        async for response in responses:
            await self.received.put(response)

    async def hosts(self) -> list[str]:
        """The Envoys' hostnames in the next response."""
        async with asyncio.timeout(5):
            response = await self.received.get()
        assignment = endpoint_pb2.ClusterLoadAssignment()
        response.resources[0].Unpack(assignment)
        return [e.endpoint.hostname for lo in assignment.endpoints for e in lo.lb_endpoints]

    async def close(self) -> None:
        """What gRPC does when the call ends: cancel the handler."""
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def test_each_envoy_on_the_stream_is_a_member_until_its_stream_ends() -> None:
    fleet = Fleet()
    servicer = EndpointDiscoveryServicer(Registry([]), fleet)
    a = EnvoyNode(servicer, "envoy-a")
    assert await a.hosts() == ["envoy-a"]
    b = EnvoyNode(servicer, "envoy-b")
    assert await b.hosts() == ["envoy-a", "envoy-b"]
    assert await a.hosts() == ["envoy-a", "envoy-b"]  # pushed to the stream already open
    await b.close()
    assert await a.hosts() == ["envoy-a"]
    a.requests.put_nowait(None)  # Envoy closes its side: the stream ends, the node leaves
    await asyncio.wait_for(a.task, 5)
    assert fleet.members() == {}
