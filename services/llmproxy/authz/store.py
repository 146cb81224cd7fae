"""Where keys and the audit trail live: the KeyStore protocol and its Redis implementation.

Redis layout (a Redis Cluster works too: every multi-key write is a non-transactional
pipeline and every conditional write touches one key):
  llmproxy:authz:key:{<key_id>}            the record, JSON
  llmproxy:authz:keys                      sorted set indexing every key by creation
  llmproxy:authz:tenant:{<tenant>}:keys    the same, per tenant
  llmproxy:authz:audit                     stream of audit entries, capped
  llmproxy:authz:invalidate                pub/sub channel: a key id whose record changed

Index members are `<created ms, 15 digits>:<key_id>` with score 0, so a lexicographic range is
creation order and the last member of a page is a stable cursor for the next.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from llmproxy.authz.errors import ConflictError
from llmproxy.authz.records import AuditEntry, KeyRecord
from llmproxy.common.lua import LuaScript
from llmproxy.common.redis import AnyRedis, connect_subscriber
from llmproxy.common.settings import RedisSettings

_PREFIX = "llmproxy:authz"
INVALIDATION_CHANNEL = f"{_PREFIX}:invalidate"
AUDIT_STREAM = f"{_PREFIX}:audit"
ALL_KEYS_INDEX = f"{_PREFIX}:keys"
REPLACE_KEY = LuaScript.beside(__file__, "replace_key.lua")

# An invalidation event that means "anything may have changed": the feed (re)subscribed.
RESYNC = ""


def record_key(key_id: str) -> str:
    """The Redis key of a key record."""
    return f"{_PREFIX}:key:{{{key_id}}}"


def tenant_index(tenant: str) -> str:
    """The Redis sorted set indexing one tenant's keys."""
    return f"{_PREFIX}:tenant:{{{tenant}}}:keys"


def index_member(record: KeyRecord) -> str:
    """The record's member in the indexes: creation time, then id."""
    return f"{int(record.created_at * 1000):015d}:{record.key_id}"


class KeyStore(Protocol):
    """Key records, the audit trail, and change notices for every authz instance."""

    async def get(self, key_id: str) -> KeyRecord | None:
        """The record of key_id, or None."""

    async def create(self, record: KeyRecord) -> None:
        """Store a new record; ConflictError if its id exists already."""

    async def replace(self, record: KeyRecord) -> bool:
        """Store record over version record.version - 1; False if that is no longer current.

        KeyNotFoundError is not raised here: a vanished record also answers False.
        """

    async def page(
        self, tenant: str | None, after: str | None, limit: int
    ) -> tuple[list[KeyRecord], str | None]:
        """Up to limit records after cursor `after`, oldest first, and the cursor to go on from
        (None when there are no more)."""

    async def publish_invalidation(self, key_id: str) -> None:
        """Tell every instance that key_id's record changed."""

    async def append_audit(self, entry: AuditEntry) -> str:
        """Append to the audit trail; returns the entry's id."""

    async def audit_page(self, before: str | None, limit: int) -> list[AuditEntry]:
        """Up to limit entries older than id `before` (or the newest), newest first."""


class RedisKeyStore:
    """KeyStore on Redis."""

    def __init__(self, redis: AnyRedis, audit_max_entries: int = 100_000) -> None:
        self._redis = redis
        self._audit_max = audit_max_entries

    async def get(self, key_id: str) -> KeyRecord | None:
        """The record of key_id, or None."""
        raw = await self._redis.get(record_key(key_id))
        return KeyRecord.from_json(raw) if raw is not None else None

    async def create(self, record: KeyRecord) -> None:
        """Store the record (only if new), then index it."""
        if not await self._redis.set(record_key(record.key_id), record.to_json(), nx=True):
            raise ConflictError(f"key_id {record.key_id} exists already")
        member = index_member(record)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zadd(ALL_KEYS_INDEX, {member: 0})
            pipe.zadd(tenant_index(record.tenant), {member: 0})
            await pipe.execute()

    async def replace(self, record: KeyRecord) -> bool:
        """Compare-and-set on the record's version, in one Lua script."""
        done = await REPLACE_KEY.run(
            self._redis, [record_key(record.key_id)], [record.version - 1, record.to_json()]
        )
        return int(done) == 1

    async def page(
        self, tenant: str | None, after: str | None, limit: int
    ) -> tuple[list[KeyRecord], str | None]:
        """One page through an index, in creation order."""
        index = tenant_index(tenant) if tenant else ALL_KEYS_INDEX
        start = f"({after}" if after else "-"
        raw = await self._redis.zrangebylex(index, start, "+", start=0, num=limit + 1)
        members = [_text(m) for m in raw]
        more = len(members) > limit
        members = members[:limit]
        records = []
        for member in members:
            record = await self.get(member.split(":", 1)[1])
            if record is not None:
                records.append(record)
        return records, (members[-1] if more and members else None)

    async def publish_invalidation(self, key_id: str) -> None:
        """PUBLISH the key id; in a cluster the message reaches subscribers on every node."""
        await self._redis.publish(INVALIDATION_CHANNEL, key_id)

    async def append_audit(self, entry: AuditEntry) -> str:
        """XADD, trimming the stream to about audit_max_entries."""
        entry_id = await self._redis.xadd(
            AUDIT_STREAM,
            entry.fields(),  # type: ignore[arg-type]  # redis-py's mapping type is invariant
            maxlen=self._audit_max,
            approximate=True,
        )
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    async def audit_page(self, before: str | None, limit: int) -> list[AuditEntry]:
        """XREVRANGE from just before `before`."""
        top = f"({before}" if before else "+"
        rows = await self._redis.xrevrange(AUDIT_STREAM, max=top, min="-", count=limit)
        return [
            AuditEntry.from_fields(
                _text(entry_id or ""), {_text(k): _text(v) for k, v in (values or {}).items()}
            )
            for entry_id, values in rows or []
        ]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisInvalidationFeed:
    """The invalidation channel, read on a connection of its own (connect_subscriber)."""

    def __init__(self, settings: RedisSettings) -> None:
        self._settings = settings

    async def events(self) -> AsyncIterator[str]:
        """Key ids whose record changed; RESYNC each time the subscription is (re)established.

        Raises a Redis or OS error when the connection is lost for good; callers reconnect.
        """
        # Idle subscriptions are PINGed each second, so a dead connection is noticed.
        client = connect_subscriber(self._settings)
        try:
            async with client.pubsub() as pubsub:
                await pubsub.subscribe(INVALIDATION_CHANNEL)
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        # Also sent after redis-py reconnects and resubscribes by itself: what
                        # was published in between is lost, so the reader must resync.
                        yield RESYNC
                    elif message["type"] == "message":
                        yield _text(message["data"])
        finally:
            await client.aclose()
