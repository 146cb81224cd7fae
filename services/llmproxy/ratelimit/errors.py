"""Exceptions of the rate limit service.

RateLimitError (a common.errors.LlmproxyError)
 ├─ LimitsConfigError (also a ConfigError): the limits file is unreadable or invalid; the
 │   message names each problem.
 ├─ DescriptorError: a control call's descriptor is malformed (no entries, an empty key).
 │   └─ NoLimitError: no configured limit applies to the descriptor.
 └─ StoreError: the shared counters (Redis) failed or were too slow; decisions degrade.
"""

from __future__ import annotations

from llmproxy.common.errors import ConfigError, LlmproxyError


class RateLimitError(LlmproxyError):
    """Base of every error the rate limit service raises on purpose."""


class LimitsConfigError(RateLimitError, ConfigError):
    """The limits file cannot be used; the limits in force (if any) stay."""


class DescriptorError(RateLimitError):
    """A descriptor given to a control call is malformed."""


class NoLimitError(DescriptorError):
    """No configured limit applies to the descriptor."""


class StoreError(RateLimitError):
    """The counter store failed; the caller decides locally instead."""
