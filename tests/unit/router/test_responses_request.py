"""Responses API requests as chat completion bodies, and the requests refused with a 400."""

from __future__ import annotations

import json
from typing import Any

import pytest

from llmproxy.router.apis.responses_request import parse_responses_request
from llmproxy.router.errors import InvalidRequestError


def chat(**body: Any) -> dict[str, Any]:
    return parse_responses_request(json.dumps({"model": "m", **body}).encode()).chat_body


def refused(body: Any) -> InvalidRequestError:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(InvalidRequestError) as raised:
        parse_responses_request(raw)
    assert raised.value.status == 400
    error = json.loads(raised.value.body())["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"]
    return raised.value


def test_string_input_is_one_user_message_after_the_instructions() -> None:
    assert chat(input="Hi", instructions="Be brief.") == {
        "model": "m",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
        ],
    }


def test_message_items_keep_their_roles_and_parts() -> None:
    body = chat(
        input=[
            {"role": "developer", "content": "Answer in French."},
            {"type": "message", "role": "user", "content": "Hi"},
            {
                "type": "message",
                "role": "assistant",
                "id": "msg_1",
                "status": "completed",
                "content": [
                    {"type": "output_text", "text": "Bon", "annotations": []},
                    {"type": "output_text", "text": "jour"},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What is this?"},
                    {
                        "type": "input_image",
                        "image_url": "data:image/png;base64,AA==",
                        "detail": "low",
                    },
                    {
                        "type": "input_image",
                        "image_url": "https://x.invalid/a.png",
                        "detail": "odd",
                    },
                ],
            },
        ]
    )
    assert body["messages"] == [
        {"role": "developer", "content": "Answer in French."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Bonjour"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {
                    "type": "image_url",
                    "image_url": {"url": "data:image/png;base64,AA==", "detail": "low"},
                },
                {"type": "image_url", "image_url": {"url": "https://x.invalid/a.png"}},
            ],
        },
    ]


def test_function_calls_join_the_assistant_turn_and_outputs_become_tool_messages() -> None:
    body = chat(
        input=[
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {"role": "assistant", "content": "Let me look."},
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": "{}"},
            {"type": "function_call", "call_id": "c2", "name": "weather", "arguments": '{"a":1}'},
            {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
            {
                "type": "function_call_output",
                "call_id": "c2",
                "output": [{"type": "input_text", "text": "rain"}],
            },
            {"type": "function_call", "call_id": "c3", "name": "clock", "arguments": "{}"},
        ]
    )
    call = {"type": "function", "function": {"name": "weather", "arguments": "{}"}}
    assert body["messages"] == [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [
                {"id": "c1", **call},
                {"id": "c2", **call, "function": {"name": "weather", "arguments": '{"a":1}'}},
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "c2", "content": "rain"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c3", "type": "function", "function": {"name": "clock", "arguments": "{}"}}
            ],
        },
    ]


def test_settings_are_translated_to_their_chat_names() -> None:
    body = chat(
        input="Hi",
        stream=True,
        max_output_tokens=50,
        temperature=0,
        top_p=0.5,
        user="u",
        safety_identifier="s",
        prompt_cache_key="k",
        service_tier="flex",
        reasoning={"effort": "low", "summary": "auto"},
        text={"verbosity": "low"},
        metadata={"team": "a"},
        store=True,
        include=["reasoning.encrypted_content"],
        truncation="auto",
        stream_options={"include_obfuscation": False},
        background=False,
        previous_response_id=None,
    )
    assert body == {
        "model": "m",
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_completion_tokens": 50,
        "temperature": 0,
        "top_p": 0.5,
        "user": "u",
        "safety_identifier": "s",
        "prompt_cache_key": "k",
        "service_tier": "flex",
        "reasoning_effort": "low",
        "verbosity": "low",
    }


def test_function_tools_and_tool_choice() -> None:
    tool = {
        "type": "function",
        "name": "weather",
        "description": "The weather.",
        "parameters": {"type": "object", "properties": {}},
        "strict": True,
    }
    body = chat(
        input="Hi",
        tools=[tool, {"type": "function", "name": "clock", "parameters": None, "strict": None}],
        tool_choice={"type": "function", "name": "weather"},
        parallel_tool_calls=False,
    )
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "weather",
                "description": "The weather.",
                "parameters": {"type": "object", "properties": {}},
                "strict": True,
            },
        },
        {"type": "function", "function": {"name": "clock"}},
    ]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "weather"}}
    assert body["parallel_tool_calls"] is False
    echo = parse_responses_request(
        json.dumps({"model": "m", "input": "Hi", "tools": [tool]}).encode()
    ).echo
    assert echo["tools"] == [tool]
    assert echo["tool_choice"] == "auto"
    assert echo["store"] is False


@pytest.mark.parametrize("mode", ["auto", "none", "required"])
def test_tool_choice_modes_pass_through(mode: str) -> None:
    tools = [{"type": "function", "name": "f"}]
    assert chat(input="Hi", tools=tools, tool_choice=mode)["tool_choice"] == mode


def test_tool_choice_without_tools_is_dropped_unless_it_asks_for_a_call() -> None:
    assert "tool_choice" not in chat(input="Hi", tool_choice="auto", parallel_tool_calls=True)
    assert "parallel_tool_calls" not in chat(input="Hi", parallel_tool_calls=True)
    assert refused({"model": "m", "input": "Hi", "tool_choice": "required"}).param == "tool_choice"


@pytest.mark.parametrize(
    ("text", "response_format"),
    [
        ({"format": {"type": "text"}}, None),
        ({"format": {"type": "json_object"}}, {"type": "json_object"}),
        (
            {
                "format": {
                    "type": "json_schema",
                    "name": "answer",
                    "schema": {"type": "object"},
                    "strict": True,
                    "description": "An answer.",
                }
            },
            {
                "type": "json_schema",
                "json_schema": {
                    "name": "answer",
                    "schema": {"type": "object"},
                    "strict": True,
                    "description": "An answer.",
                },
            },
        ),
    ],
)
def test_text_format_becomes_response_format(
    text: dict[str, Any], response_format: dict[str, Any] | None
) -> None:
    assert chat(input="Hi", text=text).get("response_format") == response_format


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("previous_response_id", "resp_123", "does not store responses"),
        ("conversation", "conv_123", "keeps no conversations"),
        ("prompt", {"id": "pmpt_1"}, "keeps no conversations"),
        ("background", True, "keeps no conversations"),
    ],
)
def test_stateful_features_are_refused_with_the_stateless_alternative(
    field: str, value: Any, reason: str
) -> None:
    error = refused({"model": "m", "input": "Hi", field: value})
    assert error.param == field
    assert reason in error.message
    assert "input items" in error.message


def stored(**body: Any) -> Any:
    return parse_responses_request(json.dumps({"model": "m", **body}).encode(), storing=True)


def test_a_storing_gateway_stores_unless_the_request_says_store_false() -> None:
    assert stored(input="Hi").echo["store"] is True
    assert stored(input="Hi", store=True).store is True
    assert stored(input="Hi", store=False).echo["store"] is False
    assert stored(input="Hi", store=None).store is True


def test_previous_response_id_is_kept_and_echoed_when_storing() -> None:
    request = stored(input="Hi", previous_response_id="resp_1", instructions="Be brief.")
    assert request.previous_response_id == "resp_1"
    assert request.echo["previous_response_id"] == "resp_1"
    assert request.input_at == 1  # after the instructions' system message
    assert stored(input="Hi").input_at == 0
    for bad in ("", 5, ["resp_1"]):
        with pytest.raises(InvalidRequestError) as raised:
            stored(input="Hi", previous_response_id=bad)
        assert raised.value.param == "previous_response_id"


@pytest.mark.parametrize("kind", ["web_search", "file_search", "code_interpreter", "mcp", "custom"])
def test_built_in_tools_are_refused_by_type(kind: str) -> None:
    tools = [{"type": "function", "name": "f"}, {"type": kind}]
    error = refused({"model": "m", "input": "Hi", "tools": tools})
    assert error.param == "tools[1].type"
    assert repr(kind) in error.message


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        (b"{nope", None, None),
        (b"[]", None, None),
        ({"input": "Hi"}, "model", None),
        ({"model": "m"}, "input", None),
        ({"model": "m", "input": ""}, "input", None),
        ({"model": "m", "input": []}, "input", None),
        ({"model": "m", "input": "Hi", "max_tokens": 5}, "max_tokens", "unknown_parameter"),
        ({"model": "m", "input": "Hi", "messages": []}, "messages", "unknown_parameter"),
        ({"model": "m", "input": "Hi", "temperature": 3}, "temperature", None),
        ({"model": "m", "input": "Hi", "max_output_tokens": 0}, "max_output_tokens", None),
        ({"model": "m", "input": "Hi", "stream": "yes"}, "stream", None),
        ({"model": "m", "input": "Hi", "metadata": {"a": 1}}, "metadata", None),
        ({"model": "m", "input": "Hi", "top_logprobs": 3}, "top_logprobs", "unsupported_parameter"),
        (
            {"model": "m", "input": "Hi", "tool_choice": {"type": "web_search"}},
            "tool_choice",
            "unsupported_value",
        ),
        ({"model": "m", "input": "Hi", "tool_choice": 5}, "tool_choice", None),
        ({"model": "m", "input": "Hi", "tools": [{"type": "function"}]}, "tools[0].name", None),
        ({"model": "m", "input": "Hi", "text": {"format": {"type": "yaml"}}}, "text.format", None),
        (
            {"model": "m", "input": "Hi", "text": {"format": {"type": "json_schema"}}},
            "text.format",
            None,
        ),
        ({"model": "m", "input": "Hi", "reasoning": {"effort": 3}}, "reasoning.effort", None),
        ({"model": "m", "input": [1]}, "input[0]", None),
        ({"model": "m", "input": [{"role": "tool", "content": "x"}]}, "input[0].role", None),
        ({"model": "m", "input": [{"role": "user", "content": 5}]}, "input[0].content", None),
        ({"model": "m", "input": [{"role": "user", "content": [{}]}]}, "input[0].content[0]", None),
        (
            {"model": "m", "input": [{"role": "user", "content": [{"type": "input_file"}]}]},
            "input[0].content[0].type",
            "unsupported_value",
        ),
        (
            {
                "model": "m",
                "input": [
                    {"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}
                ],
            },
            "input[0].content[0].image_url",
            None,
        ),
        (
            {"model": "m", "input": [{"type": "function_call", "name": "f", "arguments": "{}"}]},
            "input[0].call_id",
            None,
        ),
        (
            {
                "model": "m",
                "input": [{"type": "function_call_output", "call_id": "c", "output": 1}],
            },
            "input[0].output",
            None,
        ),
        (
            {"model": "m", "input": [{"type": "item_reference", "id": "msg_1"}]},
            "input[0].type",
            "unsupported_value",
        ),
        (
            {"model": "m", "input": [{"type": "web_search_call", "id": "ws_1"}]},
            "input[0].type",
            "unsupported_value",
        ),
        ({"model": "m", "input": [{"type": "reasoning", "summary": []}]}, "input", None),
    ],
)
def test_invalid_requests_are_400_naming_the_parameter(
    body: Any, param: str | None, code: str | None
) -> None:
    error = refused(body)
    assert error.param == param
    assert error.code == code


def test_file_id_refusal_says_what_to_send_instead() -> None:
    part = {"type": "input_image", "file_id": "file-1", "detail": "auto"}
    error = refused({"model": "m", "input": [{"role": "user", "content": [part]}]})
    assert "file_id" in error.message
    assert "image_url" in error.message
