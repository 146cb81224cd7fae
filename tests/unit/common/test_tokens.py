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


def test_anthropic_messages_count_system_and_blocks() -> None:
    body = {
        "system": [{"type": "text", "text": "s" * 8}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "u" * 8}]},
            {"role": "assistant", "content": [{"type": "tool_use", "input": {"q": "x" * 8}}]},
            {"role": "user", "content": [{"type": "tool_result", "content": "r" * 8}]},
        ],
    }
    chars = 8 + 8 + len('{"q": "xxxxxxxx"}') + 8
    assert estimate_prompt_tokens(body) == -(-chars // 4) + 3 * 4


def test_responses_count_instructions_and_items() -> None:
    assert estimate_prompt_tokens({"input": "abcdefgh", "instructions": "abcd"}) == 3
    items = [
        {"role": "user", "content": [{"type": "input_text", "text": "a" * 8}]},
        {"type": "function_call", "arguments": "b" * 8},
        {"type": "function_call_output", "output": "c" * 8},
    ]
    assert estimate_prompt_tokens({"input": items}) == 6 + 3 * 4


def test_legacy_prompt_is_counted() -> None:
    assert estimate_prompt_tokens({"prompt": "abcdefgh"}) == 2
    assert estimate_prompt_tokens({"prompt": ["abcd", "abcd"]}) == 2


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"max_tokens": 50}, 50),
        ({"max_output_tokens": 60}, 60),
        ({"prompt": "x"}, 16),
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


def test_every_completion_asked_for_is_reserved() -> None:
    chat = {"messages": [{"role": "user", "content": "abcd"}], "max_tokens": 10, "n": 3}
    assert estimate_request_tokens(chat) == 1 + 4 + 30
    legacy = {"prompt": "abcd", "max_tokens": 10, "n": 2, "best_of": 4}
    assert estimate_request_tokens(legacy) == 1 + 40
