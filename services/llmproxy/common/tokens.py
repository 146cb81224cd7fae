"""Token estimates made before a request reaches a provider (for reservations and budgets).

A cheap, tokenizer-free estimate: about four characters per token for text, plus the
completion the request may produce. Exact counts come back later in the provider's usage.
"""

from __future__ import annotations

import json
from typing import Any

CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4  # role and separators in chat formats
DEFAULT_MAX_COMPLETION_TOKENS = 1024


def _text_chars(content: Any) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        # Content parts ({"type": "text", "text": ...}) or a list of embedding inputs.
        return sum(
            _text_chars(part.get("text", "") if isinstance(part, dict) else part)
            for part in content
        )
    return len(json.dumps(content)) if content is not None else 0


def estimate_prompt_tokens(body: dict[str, Any]) -> int:
    """Tokens of the request's messages (or embedding input), rounded up, at least 1."""
    messages = body.get("messages")
    if isinstance(messages, list):
        chars = sum(_text_chars(m.get("content")) for m in messages if isinstance(m, dict))
        overhead = TOKENS_PER_MESSAGE * len(messages)
    else:
        chars, overhead = _text_chars(body.get("input")), 0
    return max(1, -(-chars // CHARS_PER_TOKEN) + overhead)


def requested_completion_tokens(
    body: dict[str, Any], default: int = DEFAULT_MAX_COMPLETION_TOKENS
) -> int:
    """The completion budget the request asks for, or default when it names none."""
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return default


def estimate_request_tokens(
    body: dict[str, Any], default_completion: int = DEFAULT_MAX_COMPLETION_TOKENS
) -> int:
    """The most tokens the request is expected to cost: prompt estimate plus completion budget."""
    return estimate_prompt_tokens(body) + requested_completion_tokens(body, default_completion)
