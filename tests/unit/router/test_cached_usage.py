"""Each adapter reports its provider's prompt cache reads as OpenAI's cached_tokens, in whole
answers and in the usage chunk of streams, with prompt_tokens counting every prompt token."""

from __future__ import annotations

from typing import Any

import pytest

from llmproxy.router.providers import anthropic, converse, gemini, sse


def _usage(prompt: int, completion: int, cached: int = 0) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if cached:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    return usage


def _last_usage(chunks: list[bytes]) -> Any:
    assert chunks[-1] == sse.DONE
    return sse.data_json(chunks[-2])["usage"]


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ({"input_tokens": 5, "output_tokens": 2}, _usage(5, 2)),
        # input_tokens is only the uncached rest: reads and writes are added back.
        (
            {
                "input_tokens": 5,
                "cache_read_input_tokens": 100,
                "cache_creation_input_tokens": 20,
                "output_tokens": 2,
            },
            _usage(125, 2, 100),
        ),
        ({"input_tokens": 5, "cache_creation_input_tokens": 20, "output_tokens": 2}, _usage(25, 2)),
        ({"input_tokens": 5, "cache_read_input_tokens": None, "output_tokens": 2}, _usage(5, 2)),
        (None, _usage(0, 0)),
    ],
)
def test_anthropic_usage(counts: Any, expected: dict[str, Any]) -> None:
    assert anthropic.usage(counts) == expected
    message = {"id": "m1", "content": [{"type": "text", "text": "hi"}], "usage": counts}
    assert anthropic.to_chat_completion(message)["usage"] == expected


def test_anthropic_stream_usage_counts_cache_reads_of_message_start() -> None:
    writer = anthropic.ChunkWriter()
    start_usage = {
        "input_tokens": 4,
        "cache_read_input_tokens": 60,
        "cache_creation_input_tokens": 0,
        "output_tokens": 1,  # provisional
    }
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": {"id": "m1", "model": "c", "usage": start_usage}},
        {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "hi"}},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn"},
            "usage": {"output_tokens": 9},
        },
        {"type": "message_stop"},
    ]
    chunks = [chunk for event in events for chunk in writer.translate(event)]
    assert _last_usage(chunks) == _usage(64, 9, 60)


def test_anthropic_stream_takes_the_cumulative_counts_of_message_delta() -> None:
    writer = anthropic.ChunkWriter()
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": {"usage": {"input_tokens": 4, "output_tokens": 1}}},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn"},
            "usage": {"input_tokens": 4, "cache_read_input_tokens": 30, "output_tokens": 7},
        },
        {"type": "message_stop"},
    ]
    chunks = [chunk for event in events for chunk in writer.translate(event)]
    assert _last_usage(chunks) == _usage(34, 7, 30)


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ({"inputTokens": 7, "outputTokens": 2, "totalTokens": 9}, _usage(7, 2)),
        (
            {
                "inputTokens": 7,
                "outputTokens": 2,
                "cacheReadInputTokens": 50,
                "cacheWriteInputTokens": 10,
            },
            _usage(67, 2, 50),
        ),
        ({}, _usage(0, 0)),
    ],
)
def test_bedrock_usage(counts: dict[str, Any], expected: dict[str, Any]) -> None:
    assert converse.usage(counts) == expected
    answer = {"output": {"message": {"content": [{"text": "hi"}]}}, "usage": counts}
    assert converse.to_chat_completion(answer, "m")["usage"] == expected
    writer = converse.ChunkWriter("m")
    writer.translate("messageStop", {"stopReason": "end_turn"})
    assert _last_usage(writer.translate("metadata", {"usage": counts})) == expected


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ({"promptTokenCount": 3, "candidatesTokenCount": 2}, _usage(3, 2)),
        # promptTokenCount already includes the cached content.
        (
            {"promptTokenCount": 300, "cachedContentTokenCount": 256, "candidatesTokenCount": 2},
            _usage(300, 2, 256),
        ),
    ],
)
def test_gemini_usage(metadata: dict[str, Any], expected: dict[str, Any]) -> None:
    assert gemini.usage(metadata) == expected
    candidate = {"content": {"parts": [{"text": "hi"}]}, "finishReason": "STOP"}
    answer = {"candidates": [candidate], "usageMetadata": metadata}
    assert gemini.to_chat_completion(answer, "g")["usage"] == expected
    writer = gemini.ChunkWriter("g")
    writer.translate(answer)
    assert _last_usage(writer.end()) == expected
