"""Where the health instances share the Envoys connected to each: heartbeat entries in Redis.

One `common.heartbeats` entry per health instance, under the hash tag `<prefix>:envoys`: its id
-> its connected Envoys as JSON (`{"node": ["address", port]}`, null for an address that is not
an IP). An instance renews its entry with every exchange; one that dies drops out after the
entry's time to live. Every error is StoreUnavailableError.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping

from redis.exceptions import RedisError

from llmproxy.common.fallback import bounded
from llmproxy.common.heartbeats import HeartbeatEntries
from llmproxy.common.redis import AnyRedis
from llmproxy.health.errors import StoreUnavailableError
from llmproxy.health.fleet import Members, Peer

log = logging.getLogger(__name__)

TIMEOUT_S = 1.0


def encode(members: Mapping[str, Peer | None]) -> str:
    """members as the JSON of an entry."""
    data = {node: None if p is None else [p.address, p.port] for node, p in members.items()}
    return json.dumps(data, sort_keys=True)


def decode(raw: str) -> Members:
    """An entry's members; ValueError if it is not what `encode` writes."""
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("not an object")  # noqa: TRY004 - bad input, as json.loads says it
    members: Members = {}
    for node, peer in data.items():
        if peer is None:
            members[node] = None
        elif (
            isinstance(peer, list)
            and len(peer) == 2
            and isinstance(peer[0], str)
            and isinstance(peer[1], int)
        ):
            members[node] = Peer(peer[0], peer[1])
        else:
            raise ValueError(f"{node}: not [address, port] or null")
    return members


class FleetStore:
    """Each health instance's connected Envoys, in Redis."""

    def __init__(self, redis: AnyRedis, prefix: str) -> None:
        self._entries = HeartbeatEntries(redis, f"{prefix}:envoys", values="members")

    async def exchange(
        self, instance: str, connected: Mapping[str, Peer | None], ttl_s: float
    ) -> dict[str, Members]:
        """Publish instance's Envoys for ttl_s; every live instance's, by instance id."""
        try:
            await bounded(self._entries.put(instance, encode(connected), ttl_s), TIMEOUT_S)
            found = await bounded(self._entries.live(), TIMEOUT_S)
        except (RedisError, OSError) as exc:  # TimeoutError is an OSError
            raise StoreUnavailableError(f"redis: {exc or type(exc).__name__}") from exc
        views = {}
        for entry, raw in found.items():
            try:
                views[entry] = decode(raw)
            except ValueError as exc:  # json.JSONDecodeError is a ValueError
                log.warning("envoy list entry ignored", extra={"entry": entry, "error": str(exc)})
        return views

    async def remove(self, instance: str) -> None:
        """Remove instance's entry at once."""
        try:
            await bounded(self._entries.remove(instance), TIMEOUT_S)
        except (RedisError, OSError) as exc:
            raise StoreUnavailableError(f"redis: {exc or type(exc).__name__}") from exc
