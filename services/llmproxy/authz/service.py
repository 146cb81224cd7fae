"""The authorization servicers: Envoy's ext_authz Check and the control API.

Check answers every decision as a CheckResponse, denials included; a gRPC error means the
service itself failed, and Envoy then fails closed (envoyconf/authz.py). Control calls reach
the servicer only once common.access_control has authenticated, authorized and (when they
change something) is auditing them; here they answer bad requests with gRPC status codes.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import TypeVar

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from envoy.type.v3 import http_status_pb2
from google.rpc import code_pb2, status_pb2
from prometheus_client import Counter
from redis.exceptions import RedisError

from llmproxy._gen.authz.v1 import authz_pb2, authz_pb2_grpc
from llmproxy.authz import convert
from llmproxy.authz.admin import KeyAdmin
from llmproxy.authz.authorizer import Authorizer
from llmproxy.authz.errors import (
    AdminError,
    BudgetExceededError,
    Denied,
    KeyStoreUnavailableError,
)
from llmproxy.authz.introspection import LocalTokenVerifier
from llmproxy.authz.records import KeyRecord
from llmproxy.authz.requests import check_input
from llmproxy.authz.token_admin import ControlTokenAdmin
from llmproxy.common import anthropic_errors
from llmproxy.common.contract import (
    API_KEY_HEADER,
    AUTHORIZATION_HEADER,
    FAULT_CLUSTER_HEADER,
    KEY_ID_HEADER,
    MODEL_HEADER,
    TENANT_HEADER,
    TIER_HEADER,
    TOKEN_ESTIMATE_HEADER,
    TRUSTED_HEADERS,
    USER_HEADER,
    fault_cluster,
)
from llmproxy.common.grpc_types import Context
from llmproxy.common.token_check import AuthzUnavailable

__all__ = [
    "AuthorizationServicer",
    "AuthzControlServicer",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

DECISIONS = Counter(
    "llmproxy_authz_decisions_total",
    "Authorization decisions, by outcome (allowed, or the denial's error code).",
    ["decision"],
)

_DENIAL_CODES = {401: code_pb2.UNAUTHENTICATED, 429: code_pb2.RESOURCE_EXHAUSTED}


def _header(name: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(
        header=base_pb2.HeaderValue(key=name, value=value),
        append_action=base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
    )


def header_safe(value: str) -> bool:
    """Whether value can travel as an HTTP header value (Envoy refuses the request otherwise).

    A model name from the body is any string; one that is not (control characters, non-ASCII,
    too long) is simply not forwarded: the router then answers 404 for the unknown model.
    """
    return 0 < len(value) <= 256 and all(" " <= c <= "~" for c in value)


def allowed(
    record: KeyRecord, model: str | None, token_estimate: int | None
) -> external_auth_pb2.CheckResponse:
    """Allow, naming the caller for the services behind Envoy."""
    headers = {
        TENANT_HEADER: record.tenant,
        USER_HEADER: record.user,
        KEY_ID_HEADER: record.key_id,
        TIER_HEADER: record.tier,
        # Lets a chaos experiment target this tenant (see envoyconf/fault.py).
        FAULT_CLUSTER_HEADER: fault_cluster(record.tenant),
    }
    if model is not None and header_safe(model):
        headers[MODEL_HEADER] = model
    if token_estimate is not None:
        headers[TOKEN_ESTIMATE_HEADER] = str(token_estimate)
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=code_pb2.OK),
        ok_response=external_auth_pb2.OkHttpResponse(
            headers=[_header(name, value) for name, value in headers.items()],
            # The client's key has done its job: the router and providers never see it.
            headers_to_remove=[AUTHORIZATION_HEADER, API_KEY_HEADER],
        ),
    )


def denied(error: Denied, path: str = "") -> external_auth_pb2.CheckResponse:
    """Deny with the error's HTTP status and the error body of the request's API: Anthropic's
    on Anthropic's paths (what the anthropic SDKs parse), OpenAI's everywhere else."""
    body = (
        anthropic_errors.error_body(error.status, error.message)
        if anthropic_errors.is_anthropic_path(path)
        else error.body()
    )
    headers = [_header("content-type", "application/json")]
    if error.status == 401:
        headers.append(_header("www-authenticate", 'Bearer realm="llmproxy"'))
    if isinstance(error, BudgetExceededError):
        # The OpenAI SDKs retry 429s unless told not to; a spent budget does not come back.
        headers.append(_header("x-should-retry", "false"))
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(
            code=_DENIAL_CODES.get(error.status, code_pb2.PERMISSION_DENIED), message=error.code
        ),
        denied_response=external_auth_pb2.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=error.status),
            headers=headers,
            body=body.decode(),
        ),
    )


class AuthorizationServicer(external_auth_pb2_grpc.AuthorizationServicer):
    """Envoy's ext_authz Check: API key, model access and budget."""

    def __init__(self, authorizer: Authorizer) -> None:
        self._authorizer = authorizer

    async def Check(
        self, request: external_auth_pb2.CheckRequest, context: Context
    ) -> external_auth_pb2.CheckResponse:
        """Allow with identity headers, or deny with an error in the request's API's shape;
        never the key."""
        check = check_input(request)
        try:
            record = await self._authorizer.authorize(check.credential, check.model)
        except Denied as error:
            DECISIONS.labels(error.code).inc()
            log.info("denied", extra={"status": error.status, "reason": error.message})
            return denied(error, request.attributes.request.http.path)
        except (RedisError, KeyStoreUnavailableError) as exc:
            # No verdict without the key store: an error, so Envoy fails closed.
            log.warning("key store unavailable", extra={"error": str(exc) or type(exc).__name__})
            await context.abort(grpc.StatusCode.UNAVAILABLE, "key store unavailable")
        DECISIONS.labels("allowed").inc()
        return allowed(record, check.model, check.token_estimate)


class AuthzControlServicer(authz_pb2_grpc.AuthzServiceServicer):
    """The authorization control API: the policy, API keys, control tokens, the audit trail."""

    def __init__(
        self, keys: KeyAdmin, tokens: ControlTokenAdmin, verifier: LocalTokenVerifier
    ) -> None:
        self._keys = keys
        self._tokens = tokens
        self._verifier = verifier

    async def GetPolicy(
        self, request: authz_pb2.GetPolicyRequest, context: Context
    ) -> authz_pb2.GetPolicyResponse:
        """Report the policy in force."""
        return authz_pb2.GetPolicyResponse(
            mode=authz_pb2.POLICY_MODE_API_KEYS, identity_headers=list(TRUSTED_HEADERS)
        )

    async def CreateKey(
        self, request: authz_pb2.CreateKeyRequest, context: Context
    ) -> authz_pb2.CreateKeyResponse:
        """Create a key; its secret is in this response only."""
        record, secret = await _answer(context, self._keys.create(request))
        return authz_pb2.CreateKeyResponse(key=convert.api_key(record), secret=secret)

    async def GetKey(
        self, request: authz_pb2.GetKeyRequest, context: Context
    ) -> authz_pb2.GetKeyResponse:
        """One key's metadata."""
        record = await _answer(context, self._keys.get(request.key_id))
        return authz_pb2.GetKeyResponse(key=convert.api_key(record))

    async def ListKeys(
        self, request: authz_pb2.ListKeysRequest, context: Context
    ) -> authz_pb2.ListKeysResponse:
        """A page of keys."""
        records, token = await _answer(context, self._keys.list_keys(request))
        return authz_pb2.ListKeysResponse(
            keys=[convert.api_key(r) for r in records], next_page_token=token
        )

    async def RevokeKey(
        self, request: authz_pb2.RevokeKeyRequest, context: Context
    ) -> authz_pb2.RevokeKeyResponse:
        """Revoke a key everywhere."""
        record = await _answer(context, self._keys.revoke(request))
        return authz_pb2.RevokeKeyResponse(key=convert.api_key(record))

    async def RotateKey(
        self, request: authz_pb2.RotateKeyRequest, context: Context
    ) -> authz_pb2.RotateKeyResponse:
        """Give a key a new secret."""
        record, secret = await _answer(context, self._keys.rotate(request))
        return authz_pb2.RotateKeyResponse(key=convert.api_key(record), secret=secret)

    async def UpdateKey(
        self, request: authz_pb2.UpdateKeyRequest, context: Context
    ) -> authz_pb2.UpdateKeyResponse:
        """Change the fields named in the mask."""
        record, _ = await _answer(context, self._keys.update(request))
        return authz_pb2.UpdateKeyResponse(key=convert.api_key(record))

    async def ListAuditRecords(
        self, request: authz_pb2.ListAuditRecordsRequest, context: Context
    ) -> authz_pb2.ListAuditRecordsResponse:
        """A page of the audit trail of every service."""
        entries, token = await _answer(context, self._keys.list_audit(request))
        return authz_pb2.ListAuditRecordsResponse(
            records=[convert.audit_record(e) for e in entries], next_page_token=token
        )

    async def CreateControlToken(
        self, request: authz_pb2.CreateControlTokenRequest, context: Context
    ) -> authz_pb2.CreateControlTokenResponse:
        """Create a control token; its secret is in this response only."""
        record, secret = await _answer(context, self._tokens.create(request))
        return authz_pb2.CreateControlTokenResponse(
            token=convert.control_token(record), secret=secret
        )

    async def ListControlTokens(
        self, request: authz_pb2.ListControlTokensRequest, context: Context
    ) -> authz_pb2.ListControlTokensResponse:
        """A page of control tokens."""
        records, token = await _answer(context, self._tokens.list_tokens(request))
        return authz_pb2.ListControlTokensResponse(
            tokens=[convert.control_token(r) for r in records], next_page_token=token
        )

    async def RotateControlToken(
        self, request: authz_pb2.RotateControlTokenRequest, context: Context
    ) -> authz_pb2.RotateControlTokenResponse:
        """Give a control token a new secret."""
        record, secret = await _answer(context, self._tokens.rotate(request))
        return authz_pb2.RotateControlTokenResponse(
            token=convert.control_token(record), secret=secret
        )

    async def RevokeControlToken(
        self, request: authz_pb2.RevokeControlTokenRequest, context: Context
    ) -> authz_pb2.RevokeControlTokenResponse:
        """Revoke a control token."""
        record = await _answer(context, self._tokens.revoke(request))
        return authz_pb2.RevokeControlTokenResponse(token=convert.control_token(record))

    async def IntrospectToken(
        self, request: authz_pb2.IntrospectTokenRequest, context: Context
    ) -> authz_pb2.IntrospectTokenResponse:
        """Whose the token is (only the stack's services may ask: the access rule says so)."""
        try:
            return await self._verifier.answer(request.token)
        except AuthzUnavailable as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
            raise  # abort raises; this keeps the type checker sure of it


async def _answer(context: Context, action: Awaitable[T]) -> T:
    """action's result; a refusal aborts with its code, a Redis failure with UNAVAILABLE."""
    try:
        return await action
    except AdminError as error:
        await context.abort(error.code, str(error))
        raise  # abort raises; this keeps the type checker sure of it
    except RedisError as exc:
        log.warning("key store unavailable", extra={"error": type(exc).__name__})
        await context.abort(grpc.StatusCode.UNAVAILABLE, "key store unavailable")
        raise
