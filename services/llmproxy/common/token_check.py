"""Whose a control token is: authz's answer, and the short in-process cache in front of it.

Only authz can tell (tokens are stored as HMACs under its secret), so every other service asks
it with IntrospectToken, presenting the service token. Answers are cached briefly, as Check
caches key records: a control call costs a dict lookup, and revocation reaches every service
within `control.token_cache_s`. While authz is unreachable, tokens seen valid keep working for
`control.token_stale_grace_s`; others are refused with UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import grpc

from llmproxy._gen.authz.v1 import authz_pb2, authz_pb2_grpc
from llmproxy.common.access import BOOTSTRAP_ADMIN, BOOTSTRAP_ADMIN_ID, Caller, Role
from llmproxy.common.credentials import bearer_metadata
from llmproxy.common.timestamps import seconds

MAX_CACHED = 10_000
NEGATIVE_TTL_S = 1.0  # a flood of bad tokens asks authz about each at most once a second


@dataclass(frozen=True)
class Introspection:
    """authz's answer about one token."""

    caller: Caller | None  # None: not a valid token
    reason: str = ""  # why not, for the refusal's message
    expires_at: float | None = None  # epoch seconds; no answer is trusted past it


class AuthzUnavailable(Exception):
    """authz did not answer; the message says why."""


class TokenVerifier(Protocol):
    """Answers whose a token is, or raises AuthzUnavailable."""

    async def introspect(self, token: str) -> Introspection: ...


def introspection_of(reply: authz_pb2.IntrospectTokenResponse) -> Introspection:
    """IntrospectToken's reply as an Introspection."""
    if not reply.active:
        return Introspection(None, reply.reason or "the token is not valid")
    if reply.token_id == BOOTSTRAP_ADMIN_ID:
        # The audit trail names it `bootstrap-admin`, as where a service compares it itself.
        return Introspection(BOOTSTRAP_ADMIN)
    expires = seconds(reply.expire_time) if reply.HasField("expire_time") else None
    caller = Caller(actor=f"token:{reply.token_id}", role=Role(reply.role), name=reply.name)
    return Introspection(caller, expires_at=float(expires) if expires is not None else None)


class AuthzIntrospector:
    """Asks authz over gRPC, on a channel that presents the service token."""

    def __init__(self, channel: grpc.aio.Channel, service_token: str, timeout_s: float) -> None:
        self._stub = authz_pb2_grpc.AuthzServiceStub(channel)
        self._metadata = bearer_metadata(service_token)
        self._timeout_s = timeout_s

    async def introspect(self, token: str) -> Introspection:
        try:
            # Waiting for the connection (within the timeout) rather than failing at once: a
            # call that comes while it is being made, or remade after authz restarted, is
            # answered as soon as authz is reachable.
            reply = await self._stub.IntrospectToken(
                authz_pb2.IntrospectTokenRequest(token=token),
                timeout=self._timeout_s,
                wait_for_ready=True,
                metadata=self._metadata,
            )
        except grpc.aio.AioRpcError as exc:
            raise AuthzUnavailable(
                f"cannot check the control token: authz answered {exc.code().name}"
            ) from exc
        return introspection_of(reply)


@dataclass
class _Entry:
    answer: Introspection
    fresh_until: float  # monotonic
    usable_until: float  # monotonic: the stale grace, for valid tokens while authz is down


class TokenCache:
    """Caches a verifier's answers, by a digest of the token (never the token itself)."""

    def __init__(
        self,
        verifier: TokenVerifier,
        ttl_s: float,
        stale_grace_s: float,
        *,
        max_entries: int = MAX_CACHED,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._verifier = verifier
        self._ttl_s = ttl_s
        self._stale_grace_s = stale_grace_s
        self._max_entries = max_entries
        self._clock = clock
        self._wall_clock = wall_clock
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self._pending: dict[bytes, asyncio.Future[Introspection]] = {}

    async def introspect(self, token: str) -> Introspection:
        """The cached answer while fresh; else authz's, one question per token at a time."""
        digest = hashlib.sha256(token.encode()).digest()
        now = self._clock()
        entry = self._entries.get(digest)
        if entry is not None and now < entry.fresh_until and self._unexpired(entry.answer):
            return entry.answer
        pending = self._pending.get(digest)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Introspection] = asyncio.get_running_loop().create_future()
        self._pending[digest] = future
        try:
            answer = await self._ask(digest, token, entry, now)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody waited
            raise
        else:
            future.set_result(answer)
            return answer
        finally:
            del self._pending[digest]

    async def _ask(
        self, digest: bytes, token: str, entry: _Entry | None, now: float
    ) -> Introspection:
        try:
            answer = await self._verifier.introspect(token)
        except AuthzUnavailable:
            # A token seen valid stays usable for its stale grace while authz is down.
            if (
                entry is not None
                and entry.answer.caller is not None
                and now < entry.usable_until
                and self._unexpired(entry.answer)
            ):
                return entry.answer
            raise
        ttl = self._ttl_s if answer.caller is not None else min(self._ttl_s, NEGATIVE_TTL_S)
        self._entries[digest] = _Entry(answer, now + ttl, now + ttl + self._stale_grace_s)
        self._entries.move_to_end(digest)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)
        return answer

    def _unexpired(self, answer: Introspection) -> bool:
        return answer.expires_at is None or self._wall_clock() < answer.expires_at
