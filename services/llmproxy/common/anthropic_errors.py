"""Anthropic's error format, which every error answered on the Messages API takes.

The anthropic SDKs raise their typed errors (AuthenticationError, RateLimitError, ...) from the
HTTP status and read `error.type` and `error.message` from this body. On Anthropic's paths
(contract.ANTHROPIC_PATH_REGEX) the router's errors, authz's denials and Envoy's own local
replies all use it, with the type Anthropic gives each status.
"""

from __future__ import annotations

import json
import re
from typing import Any

from llmproxy.common.contract import ANTHROPIC_PATH_REGEX

# Anthropic's error type for each status it documents; other statuses take the type of their
# class (error_type()).
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}

_ANTHROPIC_PATH = re.compile(ANTHROPIC_PATH_REGEX)


def error_type(status: int) -> str:
    """Anthropic's error type for an HTTP status."""
    return ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def error_object(status: int, message: str) -> dict[str, Any]:
    """Anthropic's error body as a dict: `{"type": "error", "error": {type, message}}`."""
    return {"type": "error", "error": {"type": error_type(status), "message": message}}


def error_body(status: int, message: str) -> bytes:
    """Anthropic's error body, as the SDKs parse it."""
    return json.dumps(error_object(status, message)).encode()


def is_anthropic_path(path: str) -> bool:
    """Whether a request path (REST or gRPC, query string included) is Anthropic's dialect."""
    return _ANTHROPIC_PATH.match(path) is not None
