"""Why the chaos agent refuses a stress.

LlmproxyError
 └─ StressRefused: a stress was not applied; the message says why.
     ├─ InvalidStress: the request is malformed or over a hard cap (gRPC INVALID_ARGUMENT).
     └─ OverBudget: together with stresses in effect it would pass a cap, or the machine lacks
        the memory (gRPC RESOURCE_EXHAUSTED).
"""

from __future__ import annotations

from llmproxy.common.errors import LlmproxyError


class StressRefused(LlmproxyError):
    """A stress was not applied; the message says why."""


class InvalidStress(StressRefused):
    """The request is malformed or over a hard cap; the message names the field."""


class OverBudget(StressRefused):
    """Applying the stress would pass a cap shared by every stress, or exhaust the machine."""
