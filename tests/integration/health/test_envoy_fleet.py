"""Two health instances on one Redis serve the same Envoy replicas, whichever one each Envoy's
EDS stream reached."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.endpoint.v3 import eds_pb2_grpc

from llmproxy.common.contract import ENVOYS_CLUSTER
from tests.harness.waiting import eventually
from tests.integration.health.conftest import StartHealth


class EnvoyStream:
    """One Envoy's EDS stream to one health instance, subscribed to ENVOYS_CLUSTER; it keeps
    the hosts of the latest response and acknowledges each, as Envoy does."""

    def __init__(self, channel: grpc.aio.Channel, node: str) -> None:
        self.node = node
        self.hosts: list[str] = []
        self._requests: asyncio.Queue[discovery_pb2.DiscoveryRequest] = asyncio.Queue()
        self._requests.put_nowait(
            discovery_pb2.DiscoveryRequest(
                node=base_pb2.Node(id=node), resource_names=[ENVOYS_CLUSTER]
            )
        )
        stub = eds_pb2_grpc.EndpointDiscoveryServiceStub(channel)
        self._call = stub.StreamEndpoints(self._send())
        self.task = asyncio.create_task(self._read())

    async def _send(self) -> AsyncIterator[discovery_pb2.DiscoveryRequest]:
        while True:
            yield await self._requests.get()

    async def _read(self) -> None:
        async for response in self._call:
            assignment = endpoint_pb2.ClusterLoadAssignment()
            response.resources[0].Unpack(assignment)
            self.hosts = [
                e.endpoint.hostname for lo in assignment.endpoints for e in lo.lb_endpoints
            ]
            self._requests.put_nowait(
                discovery_pb2.DiscoveryRequest(
                    resource_names=[ENVOYS_CLUSTER],
                    version_info=response.version_info,
                    response_nonce=response.nonce,
                )
            )

    async def close(self) -> None:
        """The Envoy goes: its stream ends."""
        self._call.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


async def test_each_instance_serves_the_envoys_of_both(start_health: StartHealth) -> None:
    first, second = await start_health({}), await start_health({})
    a = EnvoyStream(first.channel, "envoy-a")
    b = EnvoyStream(second.channel, "envoy-b")
    try:
        for stream in (a, b):
            await eventually(
                lambda stream=stream: stream.hosts,  # type: ignore[misc]
                lambda hosts: hosts == ["envoy-a", "envoy-b"],
                what=f"{stream.node} sees both Envoys",
                timeout_s=10,
            )
        # An Envoy that goes leaves the other instance's list too.
        await b.close()
        await eventually(
            lambda: a.hosts, lambda hosts: hosts == ["envoy-a"], what="envoy-b gone", timeout_s=10
        )
        # An Envoy with streams on both instances (one per xDS cluster, say) is one member.
        b = EnvoyStream(second.channel, "envoy-b")
        also_b = EnvoyStream(first.channel, "envoy-b")
        for stream in (a, b, also_b):
            await eventually(
                lambda stream=stream: stream.hosts,  # type: ignore[misc]
                lambda hosts: hosts == ["envoy-a", "envoy-b"],
                what=f"{stream.node} sees two Envoys",
                timeout_s=10,
            )
        await also_b.close()
    finally:
        await a.close()
        await b.close()
