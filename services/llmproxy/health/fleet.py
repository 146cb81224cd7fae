"""The Envoy replicas connected to the health service's EDS: the members of ENVOYS_CLUSTER.

An Envoy is a member while at least one of its EDS streams, on any health instance, is open;
Envoys are told apart by their node id, so each replica needs a distinct one (Envoy's
`--service-node`). Each member's endpoint is the address one of its streams comes from: nothing
connects to it, Envoy only counts the hosts of its local cluster to take its share of the edge
tier's buckets.

`Fleet` keeps the Envoys connected to this instance and, as `fleet_sync` reads them from Redis,
those of the other instances: every instance serves the union, so that every Envoy counts the
same replicas whichever instance its streams reached.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
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


Members = dict[str, Peer | None]  # each Envoy's address, by node id
Views = Mapping[str, Mapping[str, Peer | None]]  # each health instance's members, by instance


def merge(views: Views) -> Members:
    """One member per node listed by any instance, sorted by node id.

    A node on several instances (its streams went to more than one, or it moved and the old
    instance's entry has not expired yet) is one member, at the address the first instance in
    id order saw: every instance merging the same views serves the same endpoints.
    """
    merged: Members = {}
    for instance in sorted(views):
        for node, peer in views[instance].items():
            merged.setdefault(node, peer)
    return dict(sorted(merged.items()))


@dataclass
class _Member:
    streams: dict[int, Peer | None] = field(default_factory=dict)


class Fleet:
    """The Envoy nodes with an open EDS stream here or on another instance, and their changes.

    instance is this health instance's id in the shared list. Every join and leave is
    announced, and every change of the other instances' views (an EDS stream pushes only what
    differs from what it sent).
    """

    def __init__(self, instance: str = "local") -> None:
        self.instance = instance
        self._members: dict[str, _Member] = {}
        self._others: dict[str, Members] = {}
        self._events: set[asyncio.Event] = set()
        self._local_events: set[asyncio.Event] = set()

    def join(self, node: str, stream: int, peer: Peer | None) -> None:
        """Stream `stream` of node `node` is open."""
        self._members.setdefault(node, _Member()).streams[stream] = peer
        self._notify(local=True)

    def leave(self, node: str, stream: int) -> None:
        """Stream `stream` of node `node` closed; the node leaves with its last stream."""
        member = self._members.get(node)
        if member is None or stream not in member.streams:
            return
        del member.streams[stream]
        if not member.streams:
            del self._members[node]
        self._notify(local=True)

    def connected(self) -> Members:
        """The nodes connected to this instance, each at its oldest open stream's address."""
        return {
            node: next(iter(self._members[node].streams.values())) for node in sorted(self._members)
        }

    def set_others(self, views: Views) -> None:
        """The other instances' members, by instance id, as last read (none: this one alone)."""
        others = {i: dict(m) for i, m in views.items() if i != self.instance}
        if others != self._others:
            self._others = others
            self._notify(local=False)

    def members(self) -> Members:
        """Every member, of this instance and of the others, sorted by node id (see `merge`)."""
        return merge({**self._others, self.instance: self.connected()})

    def event(self, local: bool = False) -> asyncio.Event:
        """An event set at every change of membership (local: of this instance's only);
        release it with `forget`."""
        event = asyncio.Event()
        (self._local_events if local else self._events).add(event)
        return event

    def forget(self, event: asyncio.Event) -> None:
        """Stop setting event."""
        self._events.discard(event)
        self._local_events.discard(event)

    def _notify(self, local: bool) -> None:
        for event in self._events | (self._local_events if local else set()):
            event.set()
