"""Anthropic Messages requests as chat completions, and chat answers and streams back."""

from __future__ import annotations

import json
from typing import Any

import pytest

from llmproxy.router.apis.messages import MessagesApi
from llmproxy.router.apis.messages_answer import to_message
from llmproxy.router.apis.messages_request import to_chat_body
from llmproxy.router.apis.messages_stream import StreamWriter
from llmproxy.router.errors import InvalidRequestError, ProviderError, UpstreamRejection
from llmproxy.router.providers import sse

BASE = {"model": "m", "max_tokens": 50, "messages": [{"role": "user", "content": "Hi"}]}
WEATHER = {
    "name": "weather",
    "description": "The weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def chat(**fields: Any) -> dict[str, Any]:
    return to_chat_body({**BASE, **fields})


def refusal(body: dict[str, Any]) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as raised:
        to_chat_body(body)
    return raised.value


def test_a_plain_request_becomes_a_chat_body() -> None:
    assert chat() == {
        "model": "m",
        "messages": [{"role": "user", "content": "Hi"}],
        "max_completion_tokens": 50,
    }


def test_system_sampling_stop_user_and_stream_are_translated() -> None:
    body = chat(
        system=[{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Be kind."}],
        temperature=0.5,
        top_p=0.9,
        stop_sequences=["END"],
        metadata={"user_id": "u-1"},
        stream=True,
    )
    assert body["messages"][0] == {"role": "system", "content": "Be brief.\n\nBe kind."}
    assert (body["temperature"], body["top_p"], body["stop"], body["user"]) == (
        0.5,
        0.9,
        ["END"],
        "u-1",
    )
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


def test_images_become_image_url_parts() -> None:
    body = chat(
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?", "cache_control": {"type": "x"}},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"},
                    },
                    {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}},
                ],
            }
        ]
    )
    assert body["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}},
            ],
        }
    ]


def test_a_tool_round_trip_becomes_tool_calls_and_tool_messages() -> None:
    body = chat(
        tools=[WEATHER],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
        messages=[
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hm", "signature": "s"},
                    {"type": "text", "text": "Let me look."},
                    {
                        "type": "tool_use",
                        "id": "toolu_1",
                        "name": "weather",
                        "input": {"city": "P"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "Sunny"},
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_2",
                        "content": [{"type": "text", "text": "no such city"}],
                        "is_error": True,
                    },
                    {"type": "text", "text": "Thanks"},
                ],
            },
        ],
    )
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "weather",
                "parameters": WEATHER["input_schema"],
                "description": "The weather in a city.",
            },
        }
    ]
    assert body["tool_choice"] == "required"
    assert body["parallel_tool_calls"] is False
    assert body["messages"][1:] == [
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city": "P"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "Sunny"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: no such city"},
        {"role": "user", "content": [{"type": "text", "text": "Thanks"}]},
    ]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, "auto"),
        ({"type": "none"}, "none"),
        (
            {"type": "tool", "name": "weather"},
            {"type": "function", "function": {"name": "weather"}},
        ),
    ],
)
def test_tool_choices(choice: dict[str, Any], expected: Any) -> None:
    body = chat(tools=[WEATHER], tool_choice=choice)
    assert body["tool_choice"] == expected
    assert "parallel_tool_calls" not in body


def test_ignored_fields_change_nothing() -> None:
    ignored = chat(
        cache_control={"type": "ephemeral"},
        service_tier="auto",
        thinking={"type": "adaptive"},
    )
    assert ignored == chat()
    assert chat(thinking={"type": "disabled"}) == chat()
    assert chat(tool_choice={"type": "none"}) == chat()  # no tools: nothing to forbid


@pytest.mark.parametrize(
    ("fields", "param", "words"),
    [
        ({"top_k": 5}, "top_k", "top-k"),
        ({"thinking": {"type": "enabled", "budget_tokens": 2048}}, "thinking", "extended"),
        ({"mcp_servers": []}, "mcp_servers", "not supported"),
        ({"max_token": 5}, "max_token", "Extra inputs"),
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools.0.type", ""),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "document", "source": {"type": "text", "data": "x"}}],
                    }
                ]
            },
            "messages.0.content.0.type",
            "document",
        ),
        (
            {"messages": [*BASE["messages"], {"role": "assistant", "content": "The answer is"}]},
            "messages.1.role",
            "prefill",
        ),
    ],
)
def test_untranslatable_features_are_refused_by_name(
    fields: dict[str, Any], param: str, words: str
) -> None:
    err = refusal({**BASE, **fields})
    assert err.status == 400
    assert err.param == param
    assert err.message.startswith(f"{param}: ")
    assert words in err.message


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({k: v for k, v in BASE.items() if k != "max_tokens"}, "max_tokens"),
        ({**BASE, "max_tokens": 0}, "max_tokens"),
        ({**BASE, "max_tokens": True}, "max_tokens"),
        ({**BASE, "model": 3}, "model"),
        ({**BASE, "messages": []}, "messages"),
        ({**BASE, "messages": [{"role": "system", "content": "x"}]}, "messages.0.role"),
        ({**BASE, "messages": [{"role": "user", "content": 3}]}, "messages.0.content"),
        (
            {**BASE, "messages": [{"role": "user", "content": [{"text": "x"}]}]},
            "messages.0.content.0",
        ),
        ({**BASE, "temperature": 1.5}, "temperature"),
        ({**BASE, "stop_sequences": "END"}, "stop_sequences"),
        ({**BASE, "metadata": {"user": "x"}}, "metadata.user"),
        ({**BASE, "tools": [{"name": "x"}]}, "tools.0.input_schema"),
        ({**BASE, "tool_choice": {"type": "any"}}, "tool_choice"),
        ({**BASE, "stream": "yes"}, "stream"),
    ],
)
def test_wrong_types_are_refused_naming_the_field(body: dict[str, Any], param: str) -> None:
    assert refusal(body).param == param


def test_the_version_header_is_required() -> None:
    api = MessagesApi()
    with pytest.raises(InvalidRequestError, match="anthropic-version: header is required"):
        api.start(json.dumps(BASE).encode(), {})
    translation = api.start(json.dumps(BASE).encode(), {"anthropic-version": "2023-06-01"})
    assert translation.chat_body["model"] == "m"


def chat_answer(message: dict[str, Any], finish: str, **usage: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-abc",
        "object": "chat.completion",
        "model": "gpt-x",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14, **usage},
    }


def test_an_answer_becomes_a_message() -> None:
    message = to_message(chat_answer({"role": "assistant", "content": "Hello"}, "stop"))
    assert message == {
        "id": "msg_abc",
        "type": "message",
        "role": "assistant",
        "model": "gpt-x",
        "content": [{"type": "text", "text": "Hello"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 4},
    }
    cut = to_message(chat_answer({"role": "assistant", "content": "Hel"}, "length"))
    assert cut["stop_reason"] == "max_tokens"


def test_tool_calls_become_tool_use_blocks_and_cached_tokens_cache_reads() -> None:
    calls = [
        {"id": "call_1", "type": "function", "function": {"name": "a", "arguments": '{"x": 1}'}},
        {"id": "call_2", "type": "function", "function": {"name": "b", "arguments": "not json"}},
    ]
    answer = chat_answer(
        {"role": "assistant", "content": None, "tool_calls": calls},
        "tool_calls",
        prompt_tokens_details={"cached_tokens": 6},
    )
    message = to_message(answer)
    assert message["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "a", "input": {"x": 1}},
        {"type": "tool_use", "id": "call_2", "name": "b", "input": {}},
    ]
    assert message["stop_reason"] == "tool_use"
    assert message["usage"] == {
        "input_tokens": 4,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 6,
        "output_tokens": 4,
    }


def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return sse.encode({"id": "chatcmpl-s", "model": "gpt-x", "choices": [choice]})


USAGE = sse.encode(
    {"id": "chatcmpl-s", "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 3}}
)


def decoded(data: bytes) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) of each Anthropic event; the name always matches the data's type."""
    events = []
    for event in sse.split(data):
        name = (sse.field(event, b"event") or b"").decode()
        payload = sse.data_json(event)
        assert payload["type"] == name
        events.append((name, payload))
    return events


def test_a_text_stream_follows_anthropics_event_sequence() -> None:
    writer = StreamWriter()
    first = writer.events(chunk({"role": "assistant", "content": ""}) + chunk({"content": "Hel"}))
    rest = writer.events(chunk({"content": "lo"}) + chunk({}, "stop") + USAGE + sse.DONE)
    events = decoded(first + rest)
    assert [name for name, _ in events] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = events[0][1]["message"]
    assert (start["id"], start["model"], start["content"]) == ("msg_s", "gpt-x", [])
    assert start["usage"] == {"input_tokens": 0, "output_tokens": 0}
    assert events[1][1] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    assert "".join(e["delta"]["text"] for n, e in events if n == "content_block_delta") == "Hello"
    assert events[5][1]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert events[5][1]["usage"] == {"input_tokens": 7, "output_tokens": 3}


def test_text_then_tool_calls_get_blocks_of_their_own() -> None:
    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "a"}}
    second = {"index": 1, "id": "call_2", "type": "function", "function": {"name": "b"}}
    data = b"".join(
        [
            chunk({"content": "Looking"}),
            chunk({"tool_calls": [{**call, "function": {"name": "a", "arguments": ""}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"x"'}}]}),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]}),
            chunk({"tool_calls": [{**second, "function": {"name": "b", "arguments": "{}"}}]}),
            chunk({}, "tool_calls"),
            USAGE,
            sse.DONE,
        ]
    )
    events = decoded(StreamWriter().events(data))
    starts = [(e["index"], e["content_block"]) for n, e in events if n == "content_block_start"]
    assert starts == [
        (0, {"type": "text", "text": ""}),
        (1, {"type": "tool_use", "id": "call_1", "name": "a", "input": {}}),
        (2, {"type": "tool_use", "id": "call_2", "name": "b", "input": {}}),
    ]
    stops = [e["index"] for n, e in events if n == "content_block_stop"]
    assert stops == [0, 1, 2]
    pieces = [
        (e["index"], e["delta"]["partial_json"])
        for n, e in events
        if n == "content_block_delta" and e["delta"]["type"] == "input_json_delta"
    ]
    assert pieces == [(1, '{"x"'), (1, ": 1}"), (2, "{}")]
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_an_empty_stream_still_has_a_text_block_and_comments_pass() -> None:
    data = b": keepalive\n\n" + chunk({"role": "assistant"}) + chunk({}, "length") + sse.DONE
    out = StreamWriter().events(data)
    assert out.startswith(b": keepalive\n\n")
    events = decoded(out[len(b": keepalive\n\n") :])
    assert [n for n, _ in events][1:3] == ["content_block_start", "content_block_stop"]
    assert events[-2][1]["delta"]["stop_reason"] == "max_tokens"
    assert events[-2][1]["usage"] == {"input_tokens": 0, "output_tokens": 0}


def test_a_provider_error_event_becomes_anthropics_error_event() -> None:
    data = chunk({"content": "a"}) + sse.encode({"error": {"message": "overloaded"}})
    events = decoded(StreamWriter().events(data))
    assert events[-1] == (
        "error",
        {"type": "error", "error": {"type": "api_error", "message": "overloaded"}},
    )


@pytest.mark.parametrize(
    ("err", "status", "error_type", "message"),
    [
        (InvalidRequestError("max_tokens: bad"), 400, "invalid_request_error", "max_tokens: bad"),
        (ProviderError("none answered", 429), 429, "rate_limit_error", "none answered"),
        (ProviderError("down", 503), 503, "overloaded_error", "down"),
        (ProviderError("slow", 504), 504, "timeout_error", "slow"),
        (ProviderError("bad", 502), 502, "api_error", "bad"),
        (
            UpstreamRejection("x", 422, b'{"error": {"message": "provider says no"}}'),
            422,
            "invalid_request_error",
            "provider says no",
        ),
    ],
)
def test_errors_take_anthropics_shape_and_type(
    err: Any, status: int, error_type: str, message: str
) -> None:
    api = MessagesApi()
    body = json.loads(api.error_body(err))
    assert err.status == status
    assert body == {"type": "error", "error": {"type": error_type, "message": message}}
    translation = api.start(json.dumps(BASE).encode(), {"anthropic-version": "2023-06-01"})
    assert decoded(translation.error_event(err)) == [("error", body)]
