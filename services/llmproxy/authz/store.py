"""Where API keys and control tokens live: their store protocols and Redis implementations.

Redis layout (a Redis Cluster works too: every multi-key write is a non-transactional
pipeline and every conditional write touches one key):
  llmproxy:authz:key:{<key_id>}            an API key's record, JSON
  llmproxy:authz:keys                      sorted set indexing every key by creation
  llmproxy:authz:tenant:{<tenant>}:keys    the same, per tenant
  llmproxy:authz:token:{<token_id>}        a control token's record, JSON
  llmproxy:authz:tokens                    sorted set indexing every control token by creation
  llmproxy:authz:audit                     stream of every service's audit entries, capped
                                           (common.audit writes it; ListAuditRecords reads it)
  llmproxy:authz:invalidate                pub/sub channel: a key id whose record changed

Index members are `<created ms, 15 digits>:<id>` with score 0, so a lexicographic range is
creation order and the last member of a page is a stable cursor for the next. Records of both
kinds carry a version, and every change is a compare-and-set on it (replace_record.lua).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from llmproxy.authz.errors import ConflictError
from llmproxy.authz.records import ControlTokenRecord, KeyRecord
from llmproxy.common.audit import AUDIT_STREAM, AuditEntry
from llmproxy.common.lua import LuaScript
from llmproxy.common.redis import AnyRedis

_PREFIX = "llmproxy:authz"
INVALIDATION_CHANNEL = f"{_PREFIX}:invalidate"
ALL_KEYS_INDEX = f"{_PREFIX}:keys"
ALL_TOKENS_INDEX = f"{_PREFIX}:tokens"
REPLACE_RECORD = LuaScript.beside(__file__, "replace_record.lua")

R = TypeVar("R")


def record_key(key_id: str) -> str:
    """The Redis key of a key record."""
    return f"{_PREFIX}:key:{{{key_id}}}"


def token_key(token_id: str) -> str:
    """The Redis key of a control token record."""
    return f"{_PREFIX}:token:{{{token_id}}}"


def tenant_index(tenant: str) -> str:
    """The Redis sorted set indexing one tenant's keys."""
    return f"{_PREFIX}:tenant:{{{tenant}}}:keys"


def index_member(record: KeyRecord | ControlTokenRecord) -> str:
    """The record's member in the indexes: creation time, then id."""
    record_id = record.key_id if isinstance(record, KeyRecord) else record.token_id
    return f"{int(record.created_at * 1000):015d}:{record_id}"


class KeyStore(Protocol):
    """Key records, change notices for every authz instance, and the audit trail to read."""

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

    async def audit_page(self, before: str | None, limit: int) -> list[AuditEntry]:
        """Up to limit audit entries older than id `before` (or the newest), newest first."""


class ControlTokenStore(Protocol):
    """Control token records."""

    async def get(self, token_id: str) -> ControlTokenRecord | None:
        """The record of token_id, or None."""

    async def create(self, record: ControlTokenRecord) -> None:
        """Store a new record; ConflictError if its id exists already."""

    async def replace(self, record: ControlTokenRecord) -> bool:
        """Store record over version record.version - 1; False if that is no longer current
        (or the record is gone)."""

    async def page(
        self, after: str | None, limit: int
    ) -> tuple[list[ControlTokenRecord], str | None]:
        """Up to limit records after cursor `after`, oldest first, and the cursor to go on from
        (None when there are no more)."""


async def _create(redis: AnyRedis, key: str, json_text: str, indexes: dict[str, str]) -> bool:
    # The record only if new, then its index entries (index name -> member).
    if not await redis.set(key, json_text, nx=True):
        return False
    async with redis.pipeline(transaction=False) as pipe:
        for index, member in indexes.items():
            pipe.zadd(index, {member: 0})
        await pipe.execute()
    return True


async def _replace(redis: AnyRedis, key: str, version: int, json_text: str) -> bool:
    done = await REPLACE_RECORD.run(redis, [key], [version - 1, json_text])
    return int(done) == 1


async def _page(
    redis: AnyRedis,
    index: str,
    after: str | None,
    limit: int,
    get: Callable[[str], Awaitable[R | None]],
) -> tuple[list[R], str | None]:
    # One page through an index, in creation order; records gone meanwhile are skipped.
    start = f"({after}" if after else "-"
    raw = await redis.zrangebylex(index, start, "+", start=0, num=limit + 1)
    members = [_text(m) for m in raw]
    more = len(members) > limit
    members = members[:limit]
    records = []
    for member in members:
        record = await get(member.split(":", 1)[1])
        if record is not None:
            records.append(record)
    return records, (members[-1] if more and members else None)


class RedisKeyStore:
    """KeyStore on Redis."""

    def __init__(self, redis: AnyRedis) -> None:
        self._redis = redis

    async def get(self, key_id: str) -> KeyRecord | None:
        """The record of key_id, or None."""
        raw = await self._redis.get(record_key(key_id))
        return KeyRecord.from_json(raw) if raw is not None else None

    async def create(self, record: KeyRecord) -> None:
        """Store the record (only if new), then index it."""
        member = index_member(record)
        indexes = {ALL_KEYS_INDEX: member, tenant_index(record.tenant): member}
        if not await _create(self._redis, record_key(record.key_id), record.to_json(), indexes):
            raise ConflictError(f"key_id {record.key_id} exists already")

    async def replace(self, record: KeyRecord) -> bool:
        """Compare-and-set on the record's version, in one Lua script."""
        return await _replace(
            self._redis, record_key(record.key_id), record.version, record.to_json()
        )

    async def page(
        self, tenant: str | None, after: str | None, limit: int
    ) -> tuple[list[KeyRecord], str | None]:
        """One page through an index, in creation order."""
        index = tenant_index(tenant) if tenant else ALL_KEYS_INDEX
        return await _page(self._redis, index, after, limit, self.get)

    async def publish_invalidation(self, key_id: str) -> None:
        """PUBLISH the key id; in a cluster the message reaches subscribers on every node."""
        await self._redis.publish(INVALIDATION_CHANNEL, key_id)

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


class RedisControlTokenStore:
    """ControlTokenStore on Redis."""

    def __init__(self, redis: AnyRedis) -> None:
        self._redis = redis

    async def get(self, token_id: str) -> ControlTokenRecord | None:
        """The record of token_id, or None."""
        raw = await self._redis.get(token_key(token_id))
        return ControlTokenRecord.from_json(raw) if raw is not None else None

    async def create(self, record: ControlTokenRecord) -> None:
        """Store the record (only if new), then index it."""
        indexes = {ALL_TOKENS_INDEX: index_member(record)}
        if not await _create(self._redis, token_key(record.token_id), record.to_json(), indexes):
            raise ConflictError(f"token_id {record.token_id} exists already")

    async def replace(self, record: ControlTokenRecord) -> bool:
        """Compare-and-set on the record's version, in one Lua script."""
        return await _replace(
            self._redis, token_key(record.token_id), record.version, record.to_json()
        )

    async def page(
        self, after: str | None, limit: int
    ) -> tuple[list[ControlTokenRecord], str | None]:
        """One page through the index, in creation order."""
        return await _page(self._redis, ALL_TOKENS_INDEX, after, limit, self.get)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
