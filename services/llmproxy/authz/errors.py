"""Exceptions of the authorization service.

AuthzError (a common.errors.LlmproxyError)
 ├─ Denied (also a common.openai_errors.OpenAIError): a request is refused; answered to the
 │   client with an HTTP status and OpenAI's error body (Anthropic's on Anthropic's paths)
 │   ├─ MissingKeyError: 401, no key in Authorization or x-api-key
 │   ├─ InvalidKeyError: 401, the key is malformed, unknown or does not match
 │   ├─ ControlTokenAsKeyError: 401, a control token was sent where an API key belongs
 │   ├─ KeyRevokedError: 403
 │   ├─ KeyExpiredError: 403
 │   ├─ ModelNotAllowedError: 403, the key may not use the requested model
 │   └─ BudgetExceededError: 429, the key's daily or monthly budget is spent
 ├─ AdminError: an admin call is refused; answered with its gRPC status code (who may call
 │   is common.access_control's to decide, before the call gets here)
 │   ├─ InvalidArgumentError: a field of the request is invalid (the message names it)
 │   ├─ KeyNotFoundError
 │   ├─ TokenNotFoundError: no control token has the id
 │   ├─ FailedPreconditionError: the state forbids the call (rotating a revoked key or token)
 │   └─ ConflictError: the record changed concurrently too often to apply the change
 ├─ KeyStoreUnavailableError: Redis is down and the key has no last-known record (or the
 │   grace is over): no verdict, so Envoy fails closed
 └─ SecretConfigError (also a ConfigError): the HMAC secret is missing or too short

Messages never contain a secret: at most a key or token id.
"""

from __future__ import annotations

import grpc

from llmproxy.common.errors import ConfigError, LlmproxyError
from llmproxy.common.openai_errors import OpenAIError


class AuthzError(LlmproxyError):
    """Base of every error the authorization service raises on purpose."""


class Denied(AuthzError, OpenAIError):
    """A request refused, with the HTTP status and OpenAI error the client gets."""

    status = 403
    error_type = "permission_error"
    code: str | None = "permission_denied"


class MissingKeyError(Denied):
    """No API key was sent."""

    status = 401
    error_type = "invalid_request_error"
    code = "missing_api_key"

    def __init__(self) -> None:
        super().__init__(
            "You didn't provide an API key. Send it as 'Authorization: Bearer <key>' "
            "or as 'x-api-key: <key>'."
        )


class InvalidKeyError(Denied):
    """The key is malformed, unknown, or its secret does not match."""

    status = 401
    error_type = "invalid_request_error"
    code = "invalid_api_key"

    def __init__(self) -> None:
        # Deliberately one message for every case: it must not tell a guesser which part failed,
        # and it must not echo the key.
        super().__init__("Incorrect API key provided.")


class ControlTokenAsKeyError(Denied):
    """A control token was sent as an API key: it opens the control API, not the models."""

    status = 401
    error_type = "invalid_request_error"
    code = "invalid_api_key"  # what OpenAI's SDKs know; the message tells the difference

    def __init__(self) -> None:
        super().__init__(
            "A control token (ct-llmp-...) is not an API key: it is for the control API. "
            "Send an API key (sk-llmp-...) to call models."
        )


class KeyRevokedError(Denied):
    """The key was revoked."""

    code = "api_key_revoked"

    def __init__(self, key_id: str) -> None:
        super().__init__(f"The API key {key_id} has been revoked.")


class KeyExpiredError(Denied):
    """The key's expiry time has passed."""

    code = "api_key_expired"

    def __init__(self, key_id: str, expired: str) -> None:
        super().__init__(f"The API key {key_id} expired at {expired}.")


class ModelNotAllowedError(Denied):
    """The key may not use the requested model."""

    code = "model_not_allowed"
    param = "model"

    def __init__(self, key_id: str, model: str) -> None:
        super().__init__(f"The API key {key_id} is not allowed to use the model {model!r}.")


class BudgetExceededError(Denied):
    """The key has spent its budget for the period."""

    status = 429
    # OpenAI's own answer when an account is out of money: SDKs and clients know it.
    error_type = "insufficient_quota"
    code = "budget_exceeded"

    def __init__(self, key_id: str, period: str, limit: float, spent: float) -> None:
        resets = "at 00:00 UTC" if period == "daily" else "on the 1st of the month (UTC)"
        super().__init__(
            f"The API key {key_id} has spent its {period} budget of ${limit:.2f} "
            f"(${spent:.2f} so far); it resets {resets}."
        )


class AdminError(AuthzError):
    """An admin call refused; code is the gRPC status it is answered with."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL


class InvalidArgumentError(AdminError):
    """A request field is invalid; the message names it."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class KeyNotFoundError(AdminError):
    """No key has this id."""

    code = grpc.StatusCode.NOT_FOUND

    def __init__(self, key_id: str) -> None:
        super().__init__(f"no API key with key_id {key_id!r}")


class TokenNotFoundError(AdminError):
    """No control token has this id."""

    code = grpc.StatusCode.NOT_FOUND

    def __init__(self, token_id: str) -> None:
        super().__init__(f"no control token with token_id {token_id!r}")


class FailedPreconditionError(AdminError):
    """The key's or token's state forbids the call."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class ConflictError(AdminError):
    """Concurrent changes to one record kept winning; the caller may retry."""

    code = grpc.StatusCode.ABORTED


class KeyStoreUnavailableError(AuthzError):
    """No verdict: Redis is unreachable and nothing known here may stand in for it."""


class SecretConfigError(AuthzError, ConfigError):
    """The HMAC secret is missing from the environment or too short."""
