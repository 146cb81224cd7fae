"""Token estimates made before the provider call."""

from __future__ import annotations

import pytest

from llmproxy.common.tokens import (
    estimate_prompt_tokens,
    estimate_request_tokens,
    requested_completion_tokens,
)


def test_prompt_estimate_counts_text_and_message_overhead() -> None:
    body = {"messages": [{"role": "user", "content": "x" * 40}, {"role": "system", "content": ""}]}
    assert estimate_prompt_tokens(body) == 10 + 2 * 4


def test_content_parts_count_their_text() -> None:
    parts = [{"type": "text", "text": "abcd" * 3}, {"type": "image_url", "image_url": {}}]
    assert estimate_prompt_tokens({"messages": [{"role": "user", "content": parts}]}) == 3 + 4


def test_embedding_input_is_counted() -> None:
    assert estimate_prompt_tokens({"input": "abcdefgh"}) == 2
    assert estimate_prompt_tokens({"input": ["abcd", "abcd"]}) == 2


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"max_tokens": 50}, 50),
        ({"max_completion_tokens": 70, "max_tokens": 50}, 70),
        ({"max_tokens": True}, 1024),
        ({"max_tokens": -3}, 1024),
        ({}, 1024),
    ],
)
def test_completion_budget(body: dict[str, object], expected: int) -> None:
    assert requested_completion_tokens(body) == expected


def test_request_estimate_is_prompt_plus_budget() -> None:
    body = {"messages": [{"role": "user", "content": "abcd"}], "max_tokens": 10}
    assert estimate_request_tokens(body) == 1 + 4 + 10
    assert estimate_request_tokens({"messages": "junk"}, default_completion=5) >= 5
