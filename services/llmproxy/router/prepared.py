"""A validated request on its way to an answer: what the cache does with it, and its API's shape.

Every stage of answering (router/service.py, produce.py, settle.py, relay.py) reads this record.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llmproxy.common.usage import Identity
from llmproxy.router import accounting
from llmproxy.router.apis.base import InboundApi, Translation
from llmproxy.router.cache import policy
from llmproxy.router.errors import RouterError
from llmproxy.router.providers import sse
from llmproxy.router.settings import ModelSettings

JSON = "application/json"
SSE = "text/event-stream"


@dataclass(frozen=True)
class PreparedRequest:
    """One validated request and what the cache does with it."""

    kind: str  # "chat", "completions" (legacy) or "embeddings"
    body: dict[str, Any]
    model: ModelSettings
    decision: policy.CacheDecision
    digest: str  # the cache key; empty when the cache neither looks up nor stores
    cache_tenant: str | None  # whose cache entry it is; None when every tenant shares it
    identity: Identity
    headers: Mapping[str, str]
    api: InboundApi | None = None  # None for OpenAI's own APIs (chat, completions, embeddings)
    translation: Translation | None = None

    @property
    def stream(self) -> bool:
        """Whether the client asked for SSE chunks rather than one JSON body."""
        return bool(self.body.get("stream"))

    @property
    def wants_usage(self) -> bool:
        """Whether the client asked for the usage chunk of a stream."""
        options = self.body.get("stream_options")
        return isinstance(options, dict) and bool(options.get("include_usage"))

    def visible(self, event: bytes) -> bool:
        """Whether the client sees this stream event."""
        # The router always asks providers for usage; clients see it only if they asked.
        return self.wants_usage or not accounting.is_usage_only(event)

    def translated(self, data: bytes) -> bytes:
        """data (OpenAI JSON, or whole SSE events) in the shape of the request's API."""
        if self.translation is None:
            return data
        return self.translation.events(data) if self.stream else self.translation.answer(data)

    def error_event(self, err: RouterError) -> bytes:
        """The stream event that tells the client of err, in the shape of the request's API."""
        if self.translation is None:
            return sse.encode(
                {"error": {"message": err.message, "type": "upstream_error", "code": None}}
            )
        return self.translation.error_event(err)
