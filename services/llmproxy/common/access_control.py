"""The interceptor every service runs: each control call authenticated, authorized and audited.

Per call, for an RPC whose rule (llmproxy.common.access) is not open:
1. the bearer token is read from the metadata (UNAUTHENTICATED when missing or malformed);
2. it is the service token, the bootstrap admin token (both compared in constant time), or a
   control token that authz vouches for (UNAUTHENTICATED when it does not; UNAVAILABLE when
   authz cannot be asked and the token was not seen valid recently);
3. the caller must be allowed by the rule (PERMISSION_DENIED naming who may call);
4. a mutating call by a person, and every refusal, is written to the audit trail.
Open RPCs (the data plane Envoy calls, health, reflection) pass through untouched: their cost
is one dict lookup, made once per method.
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.message import Message

from llmproxy.common.access import BOOTSTRAP_ADMIN, SERVICE_CALLER, Caller, Rule, rule_for
from llmproxy.common.audit import AuditEntry, AuditTrail, arguments_json, find_field, redacted
from llmproxy.common.credentials import (
    CredentialError,
    bearer_token,
    claimed_actor,
    secret_from_env,
)
from llmproxy.common.grpc_types import Context
from llmproxy.common.interceptors import WrappingInterceptor, status_name
from llmproxy.common.redis import AnyRedis
from llmproxy.common.settings import GRPC_BALANCED
from llmproxy.common.token_check import (
    AuthzIntrospector,
    AuthzUnavailable,
    TokenCache,
    TokenVerifier,
)
from llmproxy.config import StackConfig

Closer = Callable[[], Awaitable[None]]

# The channel that asks authz about tokens keeps a connection of its own, retried quickly. grpc
# otherwise shares one connection per address in a process: an attempt another channel made
# before authz listened (health's component checks, as the stack starts) would fail control
# calls at once for the whole of grpc's reconnect backoff, a second or more.
INTROSPECT_CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.use_local_subchannel_pool", 1),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


class Refused(Exception):
    """A call refused, with the status and message the caller gets."""

    def __init__(self, code: grpc.StatusCode, message: str, caller: Caller | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.caller = caller


class AccessGuard:
    """Decides who a call comes from and whether it may go on; writes the audit trail."""

    def __init__(
        self,
        *,
        service: str,
        service_token: str,
        admin_token: str | None,
        verifier: TokenVerifier,
        audit: AuditTrail,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.service = service
        self._service_token = service_token.encode()
        self._admin_token = admin_token.encode() if admin_token else None
        self._verifier = verifier
        self._audit = audit
        self._clock = clock

    async def caller_of(self, metadata: Any) -> Caller:
        """Who presents the call's bearer token; Refused when nobody valid does."""
        try:
            token = bearer_token(metadata)
        except CredentialError as exc:
            raise Refused(grpc.StatusCode.UNAUTHENTICATED, str(exc)) from None
        encoded = token.encode()
        if hmac.compare_digest(encoded, self._service_token):
            return SERVICE_CALLER
        if self._admin_token is not None and hmac.compare_digest(encoded, self._admin_token):
            return BOOTSTRAP_ADMIN
        try:
            answer = await self._verifier.introspect(token)
        except AuthzUnavailable as exc:
            raise Refused(grpc.StatusCode.UNAVAILABLE, str(exc)) from None
        if answer.caller is None:
            raise Refused(
                grpc.StatusCode.UNAUTHENTICATED, f"the control token is not valid: {answer.reason}"
            )
        return answer.caller

    async def admit(self, method: str, rule: Rule | None, request: Any, context: Context) -> Caller:
        """The caller, if rule lets them in; otherwise the refusal is audited and the call ends."""
        try:
            return await self._decide(method, rule, context.invocation_metadata())
        except Refused as refused:
            await self.record(
                method,
                context,
                request,
                refused.caller,
                outcome=refused.code.name,
                detail=str(refused),
            )
            await context.abort(refused.code, str(refused))
            raise  # abort raises; this keeps the type checker sure of it

    async def _decide(self, method: str, rule: Rule | None, metadata: Any) -> Caller:
        if rule is None:
            raise Refused(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{method} has no access rule, so nobody may call it",
            )
        caller = await self.caller_of(metadata)
        if not caller.may_call(rule):
            raise Refused(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{_name(method)} needs {rule.describe()}; the caller's role is "
                f"{caller.role_label}",
                caller,
            )
        return caller

    async def record(
        self,
        method: str,
        context: Context,
        request: Any,
        caller: Caller | None,
        *,
        outcome: str,
        detail: str = "",
        response: Any = None,
    ) -> None:
        """Append one audit entry for the call."""
        arguments = redacted(request) if isinstance(request, Message) else {}
        answer = redacted(response) if isinstance(response, Message) else {}
        claimed = claimed_actor(context.invocation_metadata())
        actor = caller.actor if caller is not None else "anonymous"

        def about(field: str) -> str:
            return (find_field(arguments, field) or find_field(answer, field))[:70]

        await self._audit.append(
            AuditEntry(
                time=self._clock(),
                method=_name(method),
                actor=f"{actor} ({claimed})" if claimed else actor,
                peer=context.peer() or "",
                outcome=outcome,
                key_id=about("key_id"),
                tenant=about("tenant"),
                detail=detail[:300],
                service=self.service,
                role=caller.role_label if caller is not None else "",
                arguments=arguments_json(request) if isinstance(request, Message) else "",
                token_id=about("token_id"),
            )
        )


def _name(method: str) -> str:
    return method.rpartition("/")[2]


class AccessInterceptor(WrappingInterceptor):
    """Runs the guard in front of every RPC whose rule is not open."""

    def __init__(self, guard: AccessGuard) -> None:
        super().__init__()
        self._guard = guard

    def wrap_unary(self, behavior: Any, method: str) -> Any | None:
        rule = rule_for(method)
        if rule is not None and rule.open:
            return None
        guard = self._guard

        async def checked(request: Any, context: Context) -> Any:
            caller = await guard.admit(method, rule, request, context)
            if caller.is_service or rule is None or not rule.mutating:
                return await behavior(request, context)
            outcome, response = "UNKNOWN", None
            try:
                response = await behavior(request, context)
            except grpc.aio.AbortError:
                outcome = status_name(context)
                raise
            except BaseException as exc:
                outcome = "CANCELLED" if isinstance(exc, asyncio.CancelledError) else "INTERNAL"
                raise
            else:
                outcome = status_name(context)
                return response
            finally:
                details = context.details() if hasattr(context, "details") else ""
                await guard.record(
                    method,
                    context,
                    request,
                    caller,
                    outcome=outcome,
                    detail=str(details or ""),
                    response=response,
                )

        return checked

    def wrap_stream(self, behavior: Any, method: str) -> Any | None:
        # Only reads stream (tests/unit/test_access.py checks no streaming RPC is mutating).
        rule = rule_for(method)
        if rule is not None and rule.open:
            return None
        guard = self._guard

        async def checked(request: Any, context: Context) -> AsyncIterator[Any]:
            await guard.admit(method, rule, request, context)
            result = behavior(request, context)
            if inspect.isawaitable(result):
                await result  # a handler that writes with context.write()
            else:
                async for item in result:
                    yield item

        return checked


@dataclass(frozen=True)
class AccessControl:
    """A service's interceptor and what to close when the service stops."""

    interceptor: AccessInterceptor
    service_token: str = field(repr=False)  # what this service presents to the others
    closers: tuple[Closer, ...] = ()


def access_control(
    config: StackConfig,
    redis: AnyRedis,
    *,
    service: str,
    verifier: TokenVerifier | None = None,
    environ: Mapping[str, str] = os.environ,
) -> AccessControl:
    """The access control of one service, its tokens read from environ.

    Every service but authz asks authz about control tokens (verifier None); authz passes its
    own, which reads its key store. ConfigError when the service token is unset or too short.
    """
    settings = config.control
    service_token = secret_from_env(environ, settings.service_token_env, required=True) or ""
    admin_token = secret_from_env(environ, settings.admin_token_env, required=False)
    closers: list[Closer] = []
    if verifier is None:
        authz = config.services.authz
        channel = grpc.aio.insecure_channel(
            authz.grpc_target(), options=[*INTROSPECT_CHANNEL_OPTIONS, *GRPC_BALANCED]
        )
        closers.append(channel.close)
        verifier = AuthzIntrospector(channel, service_token, settings.introspect_timeout_s)
    guard = AccessGuard(
        service=service,
        service_token=service_token,
        admin_token=admin_token,
        verifier=TokenCache(verifier, settings.token_cache_s, settings.token_stale_grace_s),
        audit=AuditTrail(redis, settings.audit_max_records),
    )
    return AccessControl(AccessInterceptor(guard), service_token, tuple(closers))
