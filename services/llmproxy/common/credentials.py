"""Bearer credentials of control calls: reading them from metadata, and sending them.

Callers present `authorization: Bearer <token>`: a person's control token, the bootstrap admin
token, or the stack's service token. Parsing is strict and cheap, so that malformed or oversized
metadata is refused here with a message, before any lookup.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import grpc

from llmproxy.common.contract import ACTOR_METADATA
from llmproxy.common.errors import ConfigError

AUTHORIZATION = "authorization"
MAX_TOKEN_CHARS = 512
MIN_SECRET_CHARS = 32
MAX_ACTOR_CHARS = 64


class CredentialError(Exception):
    """The call's credential is missing or malformed; the message says what to send."""


def bearer_token(metadata: Iterable[tuple[str, Any]] | None) -> str:
    """The token of the call's single `authorization: Bearer <token>` entry, or CredentialError."""
    values = [value for key, value in (metadata or ()) if key.lower() == AUTHORIZATION]
    if not values:
        raise CredentialError(
            "control calls need the metadata 'authorization: Bearer <control token>'"
        )
    if len(values) > 1:
        raise CredentialError("send one 'authorization' metadata entry, not several")
    value = values[0]
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    scheme, _, token = str(value).strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise CredentialError("the 'authorization' metadata must read 'Bearer <control token>'")
    if len(token) > MAX_TOKEN_CHARS:
        raise CredentialError(f"the bearer token is longer than {MAX_TOKEN_CHARS} characters")
    if not (token.isascii() and token.isprintable()) or " " in token:
        raise CredentialError("the bearer token must be printable ASCII without spaces")
    return token


def claimed_actor(metadata: Iterable[tuple[str, Any]] | None) -> str:
    """The x-llmproxy-actor a caller sent (who they say they are; never verified), or ""."""
    for key, value in metadata or ():
        if key.lower() == ACTOR_METADATA and isinstance(value, str):
            claimed = value[:MAX_ACTOR_CHARS]
            return claimed if claimed.isprintable() else ""
    return ""


def secret_from_env(environ: Mapping[str, str], variable: str, *, required: bool) -> str | None:
    """A token from environ[variable]; ConfigError when required and unset, or too short."""
    value = environ.get(variable, "")
    if not value:
        if required:
            raise ConfigError(
                f"${variable} is not set: every service needs the stack's service token (at "
                f"least {MIN_SECRET_CHARS} characters, the same for every service; e.g. "
                'python -c "import secrets; print(secrets.token_urlsafe(32))")'
            )
        return None
    if len(value) < MIN_SECRET_CHARS or len(value) > MAX_TOKEN_CHARS:
        raise ConfigError(
            f"${variable} must be {MIN_SECRET_CHARS} to {MAX_TOKEN_CHARS} characters long"
        )
    return value


TOKEN_ENV = "LLMPROXY_TOKEN"  # noqa: S105 - a variable's name


def cli_token(environ: Mapping[str, str], admin_token_env: str) -> str:
    """The control token a command-line tool presents: $LLMPROXY_TOKEN, else the bootstrap
    admin token; CredentialError saying what to set when neither is."""
    token = environ.get(TOKEN_ENV) or environ.get(admin_token_env)
    if not token:
        raise CredentialError(
            f"set ${TOKEN_ENV} to a control token (or ${admin_token_env} to the admin token)"
        )
    return token


def bearer_metadata(token: str) -> tuple[tuple[str, str]]:
    """The call metadata that presents token."""
    return ((AUTHORIZATION, f"Bearer {token}"),)


def _with_entry(details: grpc.aio.ClientCallDetails, entry: tuple[str, str]) -> Any:
    metadata = grpc.aio.Metadata(*(details.metadata or ()), entry)
    return grpc.aio.ClientCallDetails(
        details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
    )


# Two classes: grpc.aio files an interceptor under the first call kind it implements only.
class _UnaryWithBearer(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, token: str) -> None:
        self._entry = bearer_metadata(token)[0]

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_with_entry(details, self._entry), request)


class _StreamWithBearer(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, token: str) -> None:
        self._entry = bearer_metadata(token)[0]

    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(_with_entry(details, self._entry), request)


def bearer_channel(
    target: str, token: str, options: list[tuple[str, Any]] | None = None
) -> grpc.aio.Channel:
    """An insecure channel to target whose every call presents token."""
    interceptors = [_UnaryWithBearer(token), _StreamWithBearer(token)]
    return grpc.aio.insecure_channel(target, options=options, interceptors=interceptors)
