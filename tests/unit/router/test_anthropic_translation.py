"""The Anthropic adapter's translations: chat requests to Messages, answers and streams back."""

from __future__ import annotations

import json
from typing import Any

import pytest

from llmproxy.router.providers import sse
from llmproxy.router.providers.anthropic import ChunkWriter, to_chat_completion
from llmproxy.router.providers.anthropic_request import to_messages_request
from llmproxy.router.providers.base import UnsupportedError

TOOL = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "The weather.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
CALL = {"id": "toolu_1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}


def request(**fields: Any) -> dict[str, Any]:
    body = {"model": "claude", "messages": [{"role": "user", "content": "Hi"}], **fields}
    return to_messages_request(body)


def test_tools_calls_and_results_become_anthropic_blocks_in_alternating_turns() -> None:
    sent = request(
        tools=[TOOL],
        tool_choice="required",
        parallel_tool_calls=False,
        user="u-1",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": "Looking.", "tool_calls": [CALL]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "Sunny"},
            {
                "role": "tool",
                "tool_call_id": "toolu_2",
                "content": [{"type": "text", "text": "Hot"}],
            },
            {"role": "user", "content": "Thanks"},
        ],
    )
    assert sent["system"] == "Be brief."
    assert sent["tools"] == [
        {
            "name": "weather",
            "input_schema": TOOL["function"]["parameters"],
            "description": "The weather.",
        }
    ]
    assert sent["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert sent["metadata"] == {"user_id": "u-1"}
    assert sent["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Weather?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Looking."},
                {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "Sunny"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "Hot"},
                {"type": "text", "text": "Thanks"},
            ],
        },
    ]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"type": "auto"}),
        ("none", {"type": "none"}),
        (
            {"type": "function", "function": {"name": "weather"}},
            {"type": "tool", "name": "weather"},
        ),
        (None, None),
    ],
)
def test_tool_choices(choice: Any, expected: Any) -> None:
    sent = request(tools=[TOOL], **({} if choice is None else {"tool_choice": choice}))
    assert sent.get("tool_choice") == expected


def test_images_become_image_blocks() -> None:
    parts = [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}},
    ]
    sent = request(messages=[{"role": "user", "content": parts}])
    assert sent["messages"][0]["content"] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
        {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}},
    ]


@pytest.mark.parametrize(
    ("fields", "feature"),
    [
        ({"response_format": {"type": "json_object"}}, "JSON mode"),
        ({"response_format": {"type": "json_schema", "json_schema": {}}}, "JSON mode"),
        ({"n": 2}, "n > 1"),
        ({"functions": [{"name": "f"}]}, "legacy functions"),
        ({"tools": [{"type": "code_interpreter"}]}, "a tool other than a function"),
        (
            {"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]},
            "'input_audio'",
        ),
    ],
)
def test_what_messages_cannot_express_is_refused_by_name(
    fields: dict[str, Any], feature: str
) -> None:
    with pytest.raises(UnsupportedError) as raised:
        request(**fields)
    assert raised.value.status == 400
    assert feature in str(raised.value)
    assert "not supported by Anthropic's Messages API" in str(raised.value)


def test_tool_use_answers_become_tool_calls_with_cached_tokens() -> None:
    answer = to_chat_completion(
        {
            "id": "msg_1",
            "model": "claude",
            "content": [
                {"type": "text", "text": "Let me see."},
                {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "P"}},
            ],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 3, "cache_read_input_tokens": 5, "output_tokens": 2},
        }
    )
    message = answer["choices"][0]["message"]
    assert message["content"] == "Let me see."
    assert message["tool_calls"] == [
        {
            "id": "toolu_1",
            "type": "function",
            "function": {"name": "weather", "arguments": '{"city": "P"}'},
        }
    ]
    assert answer["choices"][0]["finish_reason"] == "tool_calls"
    assert answer["usage"] == {
        "prompt_tokens": 8,
        "completion_tokens": 2,
        "total_tokens": 10,
        "prompt_tokens_details": {"cached_tokens": 5},
    }


def test_a_streamed_tool_use_becomes_tool_call_deltas() -> None:
    writer = ChunkWriter()
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": {"id": "m", "usage": {"input_tokens": 4}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hm"}},
        {"type": "content_block_stop", "index": 0},
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {}},
        },
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": '{"city"'},
        },
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": ': "P"}'},
        },
        {"type": "content_block_stop", "index": 1},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use"},
            "usage": {"output_tokens": 6},
        },
        {"type": "message_stop"},
    ]
    chunks = [c for e in events for c in writer.translate(e)]
    assert chunks[-1] == sse.DONE
    payloads = [json.loads(c.removeprefix(b"data: ")) for c in chunks[:-1]]
    deltas = [p["choices"][0]["delta"] for p in payloads if p["choices"]]
    assert deltas[1] == {"content": "Hm"}
    assert deltas[2]["tool_calls"] == [
        {
            "index": 0,
            "id": "toolu_1",
            "type": "function",
            "function": {"name": "weather", "arguments": ""},
        }
    ]
    arguments = "".join(d["tool_calls"][0]["function"]["arguments"] for d in deltas[2:5])
    assert arguments == '{"city": "P"}'
    assert payloads[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert payloads[-1]["usage"] == {"prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10}
