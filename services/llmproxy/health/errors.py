"""Errors of the provider health service, each mapped to one gRPC status by the servicer.

HealthError
 ├─ InvalidRequestError: INVALID_ARGUMENT, a request field is missing or out of range
 ├─ UnknownProviderError: NOT_FOUND, no provider of that name is configured
 └─ StoreUnavailableError: UNAVAILABLE, Redis is unreachable and the change must be shared
"""

from __future__ import annotations

from collections.abc import Iterable

from llmproxy.common.errors import LlmproxyError


class HealthError(LlmproxyError):
    """Base of every error the health service raises on purpose."""


class InvalidRequestError(HealthError):
    """A request field is missing, malformed or out of range; the message names it."""


class UnknownProviderError(HealthError):
    """No provider of that name is configured."""

    def __init__(self, name: str, known: Iterable[str]) -> None:
        listed = ", ".join(sorted(known)) or "none"
        super().__init__(f"no provider named {name!r} is configured (known: {listed})")
        self.name = name


class StoreUnavailableError(HealthError):
    """Redis cannot be reached, and the operation must reach every instance."""
