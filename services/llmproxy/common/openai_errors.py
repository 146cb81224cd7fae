"""OpenAI's error format, which every answer a client gets in error takes.

The OpenAI SDKs raise their typed errors (AuthenticationError, RateLimitError, ...) from the HTTP
status and read `error.message`, `error.type` and `error.code` from this body, so the router's
errors, authz's denials and Envoy's own local replies all use it.
"""

from __future__ import annotations

import json
from typing import Any

from llmproxy.common.errors import LlmproxyError


def error_object(
    message: str, error_type: str, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """OpenAI's error body as a dict: `{"error": {message, type, param, code}}`."""
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


class OpenAIError(LlmproxyError):
    """An error answered to a client with an HTTP status and OpenAI's error body.

    Subclasses set `status`, `error_type` and, where fixed, `code` and `param` as class
    attributes; an instance may name its own param and code.
    """

    status: int = 500
    error_type: str = "api_error"
    code: str | None = None
    param: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if param is not None:
            self.param = param
        if code is not None:
            self.code = code

    def body(self) -> bytes:
        """The error body, as the SDKs parse it."""
        return json.dumps(
            error_object(self.message, self.error_type, param=self.param, code=self.code)
        ).encode()
