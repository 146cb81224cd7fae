"""The admin credential: a bearer token from the environment, compared in constant time."""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from typing import Any

from llmproxy.authz.errors import AdminPermissionError, AdminUnauthenticatedError
from llmproxy.common.contract import ACTOR_METADATA

ADMIN_ACTOR = "admin"


class AdminAuth:
    """Checks the `authorization: Bearer <token>` metadata of admin calls."""

    def __init__(self, token: str | None, token_env: str) -> None:
        self._token = token.encode() if token else None
        self._token_env = token_env

    def actor(self, metadata: Iterable[tuple[str, Any]] | None) -> str:
        """Who is calling (for the audit trail), or an AdminError refusing the call."""
        values = {key.lower(): value for key, value in (metadata or ())}
        authorization = values.get("authorization", "")
        if isinstance(authorization, bytes):
            authorization = authorization.decode(errors="replace")
        scheme, _, token = str(authorization).partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AdminUnauthenticatedError(
                "admin calls need the metadata 'authorization: Bearer <admin token>'"
            )
        if self._token is None:
            raise AdminPermissionError(
                f"the admin API is disabled: ${self._token_env} is not set on the authz service"
            )
        if not hmac.compare_digest(token.strip().encode(), self._token):
            raise AdminPermissionError("the admin token is not valid")
        claimed = str(values.get(ACTOR_METADATA, ""))[:64]
        return f"{ADMIN_ACTOR} ({claimed})" if claimed.isprintable() and claimed else ADMIN_ACTOR
