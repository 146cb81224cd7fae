"""Exceptions of the rate limit service.

RateLimitError (a common.errors.LlmproxyError)
 ├─ DescriptorError: a control call's descriptor is malformed (no entries, an empty key).
 │   └─ NoLimitError: no configured limit applies to the descriptor.
 ├─ LateAnswerError: a decision was ready too late for Envoy to use it; its hits are given back.
 └─ StoreError: the shared counters (Redis) failed or were too slow; decisions degrade.

The limits file's own error, LimitsConfigError (a ConfigError: unreadable or invalid, the message
naming each problem), is common.limits_file's: Envoy's config generator reads the file too.
"""

from __future__ import annotations

from llmproxy.common.errors import LlmproxyError


class RateLimitError(LlmproxyError):
    """Base of every error the rate limit service raises on purpose."""


class DescriptorError(RateLimitError):
    """A descriptor given to a control call is malformed."""


class NoLimitError(DescriptorError):
    """No configured limit applies to the descriptor."""


class LateAnswerError(RateLimitError):
    """A decision came too close to (or past) the caller's deadline; nothing stays counted."""


class StoreError(RateLimitError):
    """The counter store failed; the caller decides locally instead."""
