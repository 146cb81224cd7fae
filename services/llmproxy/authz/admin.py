"""Key management behind the admin API: create, read, list, revoke, rotate and update keys;
and the audit trail's pages.

Every change goes through a compare-and-set on the record's version and is then published on
the invalidation channel, so no change is lost to a concurrent one and every instance's cache
drops the old record at once. token_admin does the same for control tokens, with the helpers
here.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from llmproxy._gen.authz.v1 import authz_pb2
from llmproxy.authz import validation
from llmproxy.authz.errors import (
    ConflictError,
    FailedPreconditionError,
    InvalidArgumentError,
    KeyNotFoundError,
)
from llmproxy.authz.keys import KeyHasher, new_key, new_key_id
from llmproxy.authz.records import KeyRecord
from llmproxy.authz.store import KeyStore
from llmproxy.common.audit import AuditEntry
from llmproxy.common.timestamps import seconds

R = TypeVar("R")

KEYS_CURSOR = re.compile(r"^\d{15}:[0-9a-f]{16}$")
AUDIT_CURSOR = re.compile(r"^\d{1,20}-\d{1,20}$")
UPDATABLE_FIELDS = (
    "user",
    "name",
    "allowed_models",
    "tier",
    "budget",
    "budget.daily_usd",
    "budget.monthly_usd",
    "expire_time",
    "labels",
)
_MAX_TRIES = 5
# A page of a filtered listing reads at most this many batches, then returns what it has.
_MAX_BATCHES = 20


async def filtered_page(
    fetch: Callable[[str | None, int], Awaitable[tuple[list[R], str | None]]],
    keep: Callable[[R], bool],
    size: int,
    cursor: str | None,
) -> tuple[list[R], str | None]:
    """Up to size records that keep accepts, from batches after cursor, and the cursor to go on
    from; at most _MAX_BATCHES batches are read, so a page may come back short."""
    found: list[R] = []
    for _ in range(_MAX_BATCHES):
        batch, cursor = await fetch(cursor, size - len(found))
        found.extend(r for r in batch if keep(r))
        if cursor is None or len(found) >= size:
            break
    return found, cursor


async def compare_and_set(
    read: Callable[[], Awaitable[R]],
    change: Callable[[R, float], R],
    replace: Callable[[R], Awaitable[bool]],
    clock: Callable[[], float],
    what: str,
) -> tuple[R, bool]:
    """Apply change to the current record until the store takes it over the version it was
    made from; the record and whether it changed. change returns its input for "no change".

    ConflictError (naming what) when concurrent writers win every try.
    """
    for _ in range(_MAX_TRIES):
        record = await read()
        updated = change(record, clock())
        if updated is record:
            return record, False
        if await replace(updated):
            return updated, True
    raise ConflictError(f"{what} changed concurrently; try again")


class KeyAdmin:
    """The admin operations on keys, with their validation."""

    def __init__(
        self, store: KeyStore, hasher: KeyHasher, clock: Callable[[], float] = time.time
    ) -> None:
        self._store = store
        self._hasher = hasher
        self._clock = clock

    async def create(self, request: authz_pb2.CreateKeyRequest) -> tuple[KeyRecord, str]:
        """A new key and its secret (which only this response ever holds)."""
        now = self._clock()
        key_id = new_key_id()
        secret = new_key(key_id)
        record = KeyRecord(
            key_id=key_id,
            key_hash=self._hasher.digest(secret),
            tenant=validation.name("tenant", request.tenant),
            user=validation.name("user", request.user, default="default"),
            name=validation.text("name", request.name),
            allowed_models=validation.models(request.allowed_models),
            tier=validation.tier(request.tier),
            daily_budget_usd=validation.budget("budget.daily_usd", request.budget.daily_usd),
            monthly_budget_usd=validation.budget("budget.monthly_usd", request.budget.monthly_usd),
            expires_at=validation.future_time(
                "expire_time",
                seconds(request.expire_time) if request.HasField("expire_time") else None,
                now,
            ),
            labels=validation.labels(request.labels),
            created_at=now,
            updated_at=now,
        )
        await self._store.create(record)
        # An instance may have cached this id as unknown (someone probing ids): drop that.
        await self._store.publish_invalidation(key_id)
        return record, secret

    async def get(self, key_id: str) -> KeyRecord:
        """The key's record, or KeyNotFoundError."""
        record = await self._store.get(validation.key_id(key_id))
        if record is None:
            raise KeyNotFoundError(key_id)
        return record

    async def list_keys(self, request: authz_pb2.ListKeysRequest) -> tuple[list[KeyRecord], str]:
        """A page of keys and the next page's token."""
        tenant = validation.name("tenant", request.tenant) if request.tenant else None
        size = validation.page_size(request.page_size)
        cursor = validation.decode_token(request.page_token, KEYS_CURSOR)

        async def fetch(after: str | None, limit: int) -> tuple[list[KeyRecord], str | None]:
            return await self._store.page(tenant, after, limit)

        found, cursor = await filtered_page(
            fetch, lambda r: request.include_revoked or not r.revoked, size, cursor
        )
        return found, validation.encode_token(cursor)

    async def revoke(self, request: authz_pb2.RevokeKeyRequest) -> KeyRecord:
        """Revoke the key; revoking a revoked key changes nothing."""
        reason = validation.text("reason", request.reason)

        def revoke(record: KeyRecord, now: float) -> KeyRecord:
            if record.revoked:
                return record
            return record.changed(now, revoked=True, revoked_at=now, revoke_reason=reason)

        return await self._modify(request.key_id, revoke)

    async def rotate(self, request: authz_pb2.RotateKeyRequest) -> tuple[KeyRecord, str]:
        """A new secret for the key; the current one works for the grace period."""
        grace = validation.grace_period(request.grace_period_seconds)
        key_id = validation.key_id(request.key_id)
        secret = new_key(key_id)

        def rotate(record: KeyRecord, now: float) -> KeyRecord:
            if record.revoked:
                raise FailedPreconditionError(f"key {key_id} is revoked: it cannot be rotated")
            return record.changed(
                now,
                key_hash=self._hasher.digest(secret),
                previous_key_hash=record.key_hash if grace else None,
                previous_valid_until=now + grace if grace else None,
                rotated_at=now,
            )

        return await self._modify(key_id, rotate), secret

    async def update(self, request: authz_pb2.UpdateKeyRequest) -> tuple[KeyRecord, list[str]]:
        """Apply the fields named in the mask; returns the record and the fields changed."""
        paths = list(request.update_mask.paths)
        if not paths:
            raise InvalidArgumentError(
                f"update_mask: name the fields to change, of {', '.join(UPDATABLE_FIELDS)}"
            )
        for path in paths:
            if path not in UPDATABLE_FIELDS:
                raise InvalidArgumentError(
                    f"update_mask: {path[:40]!r} cannot be updated; updatable fields: "
                    f"{', '.join(UPDATABLE_FIELDS)}"
                )
        new = request.key
        changes: dict[str, object] = {}
        if "user" in paths:
            changes["user"] = validation.name("key.user", new.user, default="default")
        if "name" in paths:
            changes["name"] = validation.text("key.name", new.name)
        if "allowed_models" in paths:
            changes["allowed_models"] = validation.models(new.allowed_models)
        if "tier" in paths:
            changes["tier"] = validation.tier(new.tier)
        if "budget" in paths or "budget.daily_usd" in paths:
            changes["daily_budget_usd"] = validation.budget(
                "key.budget.daily_usd", new.budget.daily_usd
            )
        if "budget" in paths or "budget.monthly_usd" in paths:
            changes["monthly_budget_usd"] = validation.budget(
                "key.budget.monthly_usd", new.budget.monthly_usd
            )
        if "expire_time" in paths:
            changes["expires_at"] = validation.future_time(
                "key.expire_time",
                seconds(new.expire_time) if new.HasField("expire_time") else None,
                self._clock(),
            )
        if "labels" in paths:
            changes["labels"] = validation.labels(new.labels)
        record = await self._modify(new.key_id, lambda r, now: r.changed(now, **changes))
        return record, paths

    async def list_audit(
        self, request: authz_pb2.ListAuditRecordsRequest
    ) -> tuple[list[AuditEntry], str]:
        """A page of the audit trail, newest first, and the next page's token."""
        size = validation.page_size(request.page_size)
        key_id = validation.key_id(request.key_id) if request.key_id else None
        service = validation.service(request.service) if request.service else None
        cursor = validation.decode_token(request.page_token, AUDIT_CURSOR)

        def wanted(entry: AuditEntry) -> bool:
            return (key_id is None or entry.key_id == key_id) and (
                service is None or entry.service == service
            )

        async def fetch(before: str | None, limit: int) -> tuple[list[AuditEntry], str | None]:
            batch = await self._store.audit_page(before, limit)
            return batch, (batch[-1].id if len(batch) == limit else None)

        found, cursor = await filtered_page(fetch, wanted, size, cursor)
        return found, validation.encode_token(cursor)

    async def _modify(
        self, key_id: str, change: Callable[[KeyRecord, float], KeyRecord]
    ) -> KeyRecord:
        key_id = validation.key_id(key_id)
        record, changed = await compare_and_set(
            lambda: self.get(key_id), change, self._store.replace, self._clock, f"key {key_id}"
        )
        if changed:
            await self._store.publish_invalidation(key_id)
        return record
