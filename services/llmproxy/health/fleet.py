"""The Envoy replicas connected to the health service's EDS: the members of ENVOYS_CLUSTER.

An Envoy is a member while at least one of its EDS streams is open; Envoys are told apart by
their node id, so each replica needs a distinct one (Envoy's `--service-node`). Each member's
endpoint is the address its first open stream comes from: nothing connects to it, Envoy only
counts the hosts of its local cluster to take its share of the edge tier's buckets.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import NamedTuple


class Peer(NamedTuple):
    """Where an Envoy's stream comes from: an IP address and port."""

    address: str
    port: int


def parse_peer(peer: str) -> Peer | None:
    """The address of gRPC's peer string (`ipv4:1.2.3.4:5`, `ipv6:[::1]:5`); None for others."""
    kind, _, rest = peer.partition(":")
    if kind not in ("ipv4", "ipv6"):
        return None
    host, _, port = rest.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isdigit():
        return None
    return Peer(host, int(port))


@dataclass
class _Member:
    streams: dict[int, Peer | None] = field(default_factory=dict)


class Fleet:
    """The Envoy nodes with an open EDS stream, and the changes of that set.

    Every join and leave is announced (an EDS stream pushes only what differs from what it sent).
    """

    def __init__(self) -> None:
        self._members: dict[str, _Member] = {}
        self._events: set[asyncio.Event] = set()

    def join(self, node: str, stream: int, peer: Peer | None) -> None:
        """Stream `stream` of node `node` is open."""
        self._members.setdefault(node, _Member()).streams[stream] = peer
        self._notify()

    def leave(self, node: str, stream: int) -> None:
        """Stream `stream` of node `node` closed; the node leaves with its last stream."""
        member = self._members.get(node)
        if member is None or stream not in member.streams:
            return
        del member.streams[stream]
        if not member.streams:
            del self._members[node]
        self._notify()

    def members(self) -> dict[str, Peer | None]:
        """Each member's address (that of its oldest open stream), by node id, sorted."""
        return {
            node: next(iter(self._members[node].streams.values())) for node in sorted(self._members)
        }

    def event(self) -> asyncio.Event:
        """An event set at every change of membership; release it with `forget`."""
        event = asyncio.Event()
        self._events.add(event)
        return event

    def forget(self, event: asyncio.Event) -> None:
        """Stop setting event."""
        self._events.discard(event)

    def _notify(self) -> None:
        for event in self._events:
            event.set()
