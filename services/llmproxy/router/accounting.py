"""Reading usage out of OpenAI-format answers, and telling usage chunks apart in streams."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from llmproxy.router.pricing import Tokens
from llmproxy.router.providers import sse


def _tokens(usage: Any) -> Tokens | None:
    if not isinstance(usage, dict):
        return None
    prompt = usage.get("prompt_tokens", 0)
    completion = usage.get("completion_tokens", 0)
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    # Every adapter puts the provider's prompt cache reads here, where OpenAI reports them.
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    cached = min(max(cached, 0), prompt) if isinstance(cached, int) else 0
    return Tokens(prompt, cached, completion)


def answer_usage(body: bytes) -> Tokens | None:
    """The tokens of a JSON answer, when it reports them."""
    try:
        return _tokens(json.loads(body).get("usage"))
    except (ValueError, AttributeError):
        return None


def stream_usage(events: Iterable[bytes]) -> Tokens | None:
    """The tokens of a stream: its last chunk that reports usage."""
    found = None
    for event in events:
        payload = sse.data_json(event)
        if isinstance(payload, dict) and payload.get("usage"):
            found = _tokens(payload["usage"]) or found
    return found


def is_usage_only(event: bytes) -> bool:
    """True for the final chunk that carries usage and no choices (asked for by the router)."""
    payload = sse.data_json(event)
    return isinstance(payload, dict) and payload.get("choices") == [] and "usage" in payload
