"""OpenAI's usage object, which every adapter answers with whatever its provider reports.

OpenAI's prompt_tokens counts every prompt token, and prompt_tokens_details.cached_tokens the
part of them the provider read from its prompt cache (billed at a discount); the router prices
calls from these two (router/pricing.py).
"""

from __future__ import annotations

from typing import Any


def count(counts: Any, name: str) -> int:
    """counts[name] when counts is a dict and that is a count, else 0 (absent or null)."""
    value = counts.get(name) if isinstance(counts, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def openai_usage(prompt: int, completion: int, cached: int = 0) -> dict[str, Any]:
    """OpenAI's usage: prompt tokens (cached ones included), completion tokens, and the cached
    count in prompt_tokens_details when there is one."""
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if cached:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    return usage


def usage_with_cache(
    counts: Any, *, prompt: str, completion: str, cache_read: str, cache_write: str
) -> dict[str, Any]:
    """OpenAI usage from counts whose prompt count (named `prompt`) leaves out the prompt's
    cache reads and writes, as Anthropic's and Converse's do: OpenAI's prompt_tokens counts
    them, and the reads are its cached_tokens."""
    read = count(counts, cache_read)
    prompt_tokens = count(counts, prompt) + read + count(counts, cache_write)
    return openai_usage(prompt_tokens, count(counts, completion), read)
