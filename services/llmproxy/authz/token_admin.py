"""Control token management behind the admin API: create, list, rotate and revoke tokens.

Control tokens are what people and tools present to every service's control API (the access
interceptor of llmproxy.common.access_control asks IntrospectToken about them). They are made
and stored like API keys: `ct-llmp-<token_id>-<secret>`, only its HMAC in Redis, every change
a compare-and-set on the record's version. No invalidation is published: services cache
answers about tokens for `control.token_cache_s` only.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from llmproxy._gen.authz.v1 import authz_pb2
from llmproxy.authz import validation
from llmproxy.authz.admin import compare_and_set, filtered_page
from llmproxy.authz.errors import FailedPreconditionError, TokenNotFoundError
from llmproxy.authz.keys import CONTROL_TOKEN, KeyHasher
from llmproxy.authz.records import ControlTokenRecord
from llmproxy.authz.store import ControlTokenStore
from llmproxy.common.timestamps import seconds

TOKENS_CURSOR = re.compile(r"^\d{15}:[0-9a-f]{16}$")


class ControlTokenAdmin:
    """The admin operations on control tokens, with their validation."""

    def __init__(
        self, store: ControlTokenStore, hasher: KeyHasher, clock: Callable[[], float] = time.time
    ) -> None:
        self._store = store
        self._hasher = hasher
        self._clock = clock

    async def create(
        self, request: authz_pb2.CreateControlTokenRequest
    ) -> tuple[ControlTokenRecord, str]:
        """A new token and its secret (which only this response ever holds)."""
        now = self._clock()
        name = validation.token_name(request.name)
        role = validation.role(request.role)
        expires_at = validation.future_time(
            "expire_time",
            seconds(request.expire_time) if request.HasField("expire_time") else None,
            now,
        )
        token_id = CONTROL_TOKEN.new_id()
        secret = CONTROL_TOKEN.new(token_id)
        record = ControlTokenRecord(
            token_id=token_id,
            token_hash=self._hasher.digest(secret),
            name=name,
            role=role.label,
            created_at=now,
            expires_at=expires_at,
        )
        await self._store.create(record)
        return record, secret

    async def get(self, token_id: str) -> ControlTokenRecord:
        """The token's record, or TokenNotFoundError."""
        record = await self._store.get(validation.token_id(token_id))
        if record is None:
            raise TokenNotFoundError(token_id)
        return record

    async def list_tokens(
        self, request: authz_pb2.ListControlTokensRequest
    ) -> tuple[list[ControlTokenRecord], str]:
        """A page of tokens, oldest first, and the next page's token."""
        size = validation.page_size(request.page_size)
        cursor = validation.decode_token(request.page_token, TOKENS_CURSOR)
        found, cursor = await filtered_page(
            self._store.page, lambda r: request.include_revoked or not r.revoked, size, cursor
        )
        return found, validation.encode_token(cursor)

    async def revoke(self, request: authz_pb2.RevokeControlTokenRequest) -> ControlTokenRecord:
        """Revoke the token; revoking a revoked token changes nothing."""
        reason = validation.text("reason", request.reason)

        def revoke(record: ControlTokenRecord, now: float) -> ControlTokenRecord:
            if record.revoked:
                return record
            return record.changed(revoked=True, revoked_at=now, revoke_reason=reason)

        return await self._modify(request.token_id, revoke)

    async def rotate(
        self, request: authz_pb2.RotateControlTokenRequest
    ) -> tuple[ControlTokenRecord, str]:
        """A new secret for the token; the current one works for the grace period."""
        grace = validation.grace_period(request.grace_period_seconds)
        token_id = validation.token_id(request.token_id)
        secret = CONTROL_TOKEN.new(token_id)

        def rotate(record: ControlTokenRecord, now: float) -> ControlTokenRecord:
            if record.revoked:
                raise FailedPreconditionError(
                    f"control token {token_id} is revoked: it cannot be rotated"
                )
            return record.changed(
                token_hash=self._hasher.digest(secret),
                previous_hash=record.token_hash if grace else None,
                previous_valid_until=now + grace if grace else None,
                rotated_at=now,
            )

        return await self._modify(token_id, rotate), secret

    async def _modify(
        self, token_id: str, change: Callable[[ControlTokenRecord, float], ControlTokenRecord]
    ) -> ControlTokenRecord:
        token_id = validation.token_id(token_id)
        record, _ = await compare_and_set(
            lambda: self.get(token_id),
            change,
            self._store.replace,
            self._clock,
            f"control token {token_id}",
        )
        return record
