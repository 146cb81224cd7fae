"""Whose a control token is, answered from authz's own store: IntrospectToken, and authz's own
access control.

Every other service asks IntrospectToken (common.token_check.AuthzIntrospector); authz asks
LocalTokenVerifier directly, and both get the same answer, as the same message. A refused
token's reason says what it is (unknown, revoked, expired, an API key, malformed), never
whether an id exists: a token whose secret does not match is as unknown as a made-up one.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable

from redis.exceptions import RedisError

from llmproxy._gen.authz.v1 import authz_pb2
from llmproxy.authz.keys import CONTROL_TOKEN, KEY_PREFIX, KeyHasher, SecretMatch
from llmproxy.authz.store import ControlTokenStore
from llmproxy.common.access import BOOTSTRAP_ADMIN, BOOTSTRAP_ADMIN_ID, Role
from llmproxy.common.timestamps import optional_timestamp
from llmproxy.common.token_check import AuthzUnavailable, Introspection, introspection_of

UNKNOWN = "unknown token"
REVOKED = "revoked"
EXPIRED = "expired"
MALFORMED = "malformed token"
API_KEY = (
    "an API key is not a control token: create one with CreateControlToken "
    "(python -m llmproxy.authz.cli tokens create)"
)


def _inactive(reason: str) -> authz_pb2.IntrospectTokenResponse:
    return authz_pb2.IntrospectTokenResponse(active=False, reason=reason)


class LocalTokenVerifier:
    """common.token_check.TokenVerifier on authz's token store and bootstrap admin token."""

    def __init__(
        self,
        store: ControlTokenStore,
        hasher: KeyHasher,
        admin_token: str | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._hasher = hasher
        self._admin_token = admin_token.encode() if admin_token else None
        self._clock = clock

    async def introspect(self, token: str) -> Introspection:
        """Whose token is; AuthzUnavailable when the store cannot be read."""
        return introspection_of(await self.answer(token))

    async def answer(self, token: str) -> authz_pb2.IntrospectTokenResponse:
        """IntrospectToken's reply about token; AuthzUnavailable when the store cannot be read."""
        if self._admin_token is not None and hmac.compare_digest(
            token.encode(errors="replace"), self._admin_token
        ):
            return authz_pb2.IntrospectTokenResponse(
                active=True,
                token_id=BOOTSTRAP_ADMIN_ID,
                role=Role.ADMIN.value,
                name=BOOTSTRAP_ADMIN.name,
            )
        token_id = CONTROL_TOKEN.id_of(token)
        if token_id is None:
            return _inactive(API_KEY if token.startswith(KEY_PREFIX) else MALFORMED)
        try:
            record = await self._store.get(token_id)
        except (RedisError, OSError) as exc:
            # The exception's text could name the Redis URL, with its password: only its type.
            raise AuthzUnavailable(
                f"cannot check the control token: its store is unavailable ({type(exc).__name__})"
            ) from exc
        now = self._clock()
        found = (
            SecretMatch.NONE if record is None else record.secret_match(self._hasher, token, now)
        )
        if record is None or found is SecretMatch.NONE:
            return _inactive(UNKNOWN)
        if record.revoked:
            return _inactive(REVOKED)
        if record.expired(now):
            return _inactive(EXPIRED)
        # No answer may outlive the token, nor an old secret its grace: callers cache up to it.
        ends = [t for t in (record.expires_at,) if t is not None]
        if found is SecretMatch.PREVIOUS and record.previous_valid_until is not None:
            ends.append(record.previous_valid_until)
        return authz_pb2.IntrospectTokenResponse(
            active=True,
            token_id=record.token_id,
            role=record.access_role.value,
            name=record.name,
            expire_time=optional_timestamp(min(ends) if ends else None),
        )
