"""Errors the router answers clients with, in OpenAI's error format.

LlmproxyError
 └─ OpenAIError (common.openai_errors: an HTTP status and OpenAI's error body)
     └─ RouterError
         ├─ InvalidRequestError: 400, the body is not a valid request
         ├─ ModelNotFoundError: 404, no such model is served
         ├─ UnsupportedFeatureError: 400, no provider of the model supports what was asked
         ├─ ProviderError: 502/503/504, every provider target failed (429 if all were rate limited)
         └─ UpstreamRejection: a provider's own 4xx about the request, relayed as it sent it
"""

from __future__ import annotations

from llmproxy.common.openai_errors import OpenAIError


class RouterError(OpenAIError):
    """An error the router answers a client with."""


class InvalidRequestError(RouterError):
    """The request body is not a valid request."""

    status = 400
    error_type = "invalid_request_error"


class ModelNotFoundError(RouterError):
    """The requested model is not served by this gateway."""

    status = 404
    error_type = "invalid_request_error"

    def __init__(self, model: str) -> None:
        super().__init__(
            f"The model {model!r} does not exist or you do not have access to it.",
            param="model",
            code="model_not_found",
        )


class UnsupportedFeatureError(RouterError):
    """No target of the model supports the feature the request needs (e.g. legacy completions
    on Anthropic): the message names the feature and each target's provider and kind."""

    status = 400
    error_type = "invalid_request_error"

    def __init__(self, feature: str, providers: list[tuple[str, str]]) -> None:
        named = ", ".join(f"{name!r} ({kind})" for name, kind in providers)
        super().__init__(
            f"This model's providers do not support {feature}: {named}.",
            code="unsupported_feature",
        )


class ProviderError(RouterError):
    """No provider target answered; status is 502 (bad answer), 503 (down) or 504 (timeout),
    or 429 when every target was rate limited (with the provider's Retry-After)."""

    error_type = "upstream_error"

    def __init__(self, message: str, status: int = 502, retry_after_s: float | None = None) -> None:
        super().__init__(message, code="upstream_error")
        self.status = status
        self.retry_after_s = retry_after_s
        if status == 429:
            self.error_type = "rate_limit_exceeded"


class UpstreamRejection(RouterError):
    """A provider's 4xx about the request itself, relayed with its status and body."""

    def __init__(self, message: str, status: int, body: bytes) -> None:
        super().__init__(message)
        self.status = status
        self._raw = body

    def body(self) -> bytes:
        """The provider's own error body when it sent one."""
        return self._raw or super().body()
