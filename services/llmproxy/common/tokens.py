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
LEGACY_DEFAULT_MAX_TOKENS = 16


# Where text sits in content parts: OpenAI's text parts, Anthropic's tool results (content)
# and tool calls (input), Responses' items (content) and function outputs (output).
_PART_TEXT_FIELDS = ("text", "content", "input", "output", "arguments")


def _text_chars(content: Any) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        # Content parts ({"type": "text", "text": ...}), items, or embedding inputs.
        return sum(_text_chars(part) for part in content)
    if isinstance(content, dict):
        return sum(_part_field_chars(content.get(name)) for name in _PART_TEXT_FIELDS)
    return len(json.dumps(content)) if content is not None else 0


def _part_field_chars(value: Any) -> int:
    # A tool call's input is arbitrary JSON: counted as the JSON the model sees.
    return len(json.dumps(value)) if isinstance(value, dict) else _text_chars(value)


def estimate_prompt_tokens(body: dict[str, Any]) -> int:
    """Tokens of the request's prompt, rounded up, at least 1, in any API the gateway serves:
    chat `messages`, Anthropic's `system` and `messages`, Responses' `instructions` and
    `input`, legacy completions' `prompt`, embeddings' `input`."""
    messages = body.get("messages")
    if isinstance(messages, list):
        chars = sum(_text_chars(m.get("content")) for m in messages if isinstance(m, dict))
        overhead = TOKENS_PER_MESSAGE * len(messages)
    else:
        items = body.get("input")
        chars = _text_chars(items) + _text_chars(body.get("prompt"))
        overhead = TOKENS_PER_MESSAGE * _item_count(items)
    chars += _text_chars(body.get("system")) + _text_chars(body.get("instructions"))
    return max(1, -(-chars // CHARS_PER_TOKEN) + overhead)


def _item_count(value: Any) -> int:
    # Responses' input items (messages, tool calls), not embedding inputs.
    if not isinstance(value, list):
        return 0
    return sum(1 for v in value if isinstance(v, dict))


def _positive(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def requested_completion_tokens(
    body: dict[str, Any], default: int = DEFAULT_MAX_COMPLETION_TOKENS
) -> int:
    """The budget of one completion the request asks for, or default when it names none."""
    budget = next(
        (
            value
            for name in ("max_completion_tokens", "max_tokens", "max_output_tokens")
            if (value := _positive(body.get(name))) is not None
        ),
        None,
    )
    if budget is None:
        # Legacy completions stop at 16 tokens unless told otherwise, as OpenAI's API does.
        return LEGACY_DEFAULT_MAX_TOKENS if "prompt" in body else default
    return budget


def _completions(body: dict[str, Any]) -> int:
    # `n` completions come back; legacy completions generate `best_of` of them.
    return max(_positive(body.get("n")) or 1, _positive(body.get("best_of")) or 1)


def estimate_request_tokens(
    body: dict[str, Any], default_completion: int = DEFAULT_MAX_COMPLETION_TOKENS
) -> int:
    """The most tokens the request is expected to cost: prompt estimate plus the completion
    budget of every completion it asks for."""
    completion = requested_completion_tokens(body, default_completion) * _completions(body)
    return estimate_prompt_tokens(body) + completion
