"""The OpenAI routes, through raw HTTP and through the official openai SDK."""

from __future__ import annotations

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello there, fake model"}]


async def test_sdk_lists_the_configured_models(sdk: openai.AsyncOpenAI) -> None:
    page = await sdk.models.list()

    assert [model.id for model in page.data] == ["fake-gpt", "fake-claude", "fake-embed"]
    assert {model.owned_by for model in page.data} == {"llmproxy-fake"}


async def test_sdk_retrieves_one_model(sdk: openai.AsyncOpenAI) -> None:
    model = await sdk.models.retrieve("fake-gpt")

    assert model.id == "fake-gpt"
    with pytest.raises(openai.NotFoundError):
        await sdk.models.retrieve("gpt-nonexistent")


async def test_sdk_chat_completion(sdk: openai.AsyncOpenAI) -> None:
    completion = await sdk.chat.completions.create(model="fake-gpt", messages=HELLO)

    assert completion.object == "chat.completion"
    assert completion.model == "fake-gpt"
    assert (
        completion.choices[0].message.content == "This is a fake answer to: Hello there, fake model"
    )
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 4
    assert completion.usage.completion_tokens == 10
    assert completion.usage.total_tokens == 14


async def test_sdk_chat_stream_with_usage_matches_the_whole_answer(sdk: openai.AsyncOpenAI) -> None:
    whole = await sdk.chat.completions.create(model="fake-gpt", messages=HELLO)

    stream = await sdk.chat.completions.create(
        model="fake-gpt",
        messages=HELLO,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop"
    assert set(finishes[:-1]) == {None}
    assert chunks[-1].choices == []
    assert chunks[-1].usage == whole.usage
    assert all(c.usage is None for c in chunks[:-1])


async def test_sdk_chat_max_tokens_cuts_the_answer(sdk: openai.AsyncOpenAI) -> None:
    completion = await sdk.chat.completions.create(
        model="fake-gpt",
        messages=HELLO,
        max_completion_tokens=3,
    )

    assert completion.choices[0].message.content == "This is a"
    assert completion.choices[0].finish_reason == "length"


async def test_sdk_unknown_model_is_not_found(sdk: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await sdk.chat.completions.create(model="gpt-nonexistent", messages=HELLO)

    assert caught.value.code == "model_not_found"
    assert caught.value.type == "invalid_request_error"


async def test_sdk_empty_messages_is_a_bad_request(sdk: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await sdk.chat.completions.create(model="fake-gpt", messages=[])

    assert caught.value.param == "messages"


async def test_sdk_embeddings_match_the_float_encoding(
    sdk: openai.AsyncOpenAI, http: httpx.AsyncClient
) -> None:
    # The SDK asks for base64 unless told otherwise and decodes it itself.
    result = await sdk.embeddings.create(model="fake-embed", input=["one two", "three"])
    raw = await http.post(
        "/v1/embeddings", json={"model": "fake-embed", "input": ["one two", "three"]}
    )

    assert [item.embedding for item in result.data] == [
        item["embedding"] for item in raw.json()["data"]
    ]
    assert len(result.data[0].embedding) == 8
    assert result.usage.prompt_tokens == 3


async def test_embeddings_accept_a_single_string(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/embeddings", json={"model": "fake-embed", "input": "solo"})

    assert response.status_code == 200
    assert len(response.json()["data"]) == 1


async def test_stream_is_server_sent_events_ending_in_done(http: httpx.AsyncClient) -> None:
    body = {"model": "fake-gpt", "messages": HELLO, "stream": True}
    async with http.stream("POST", "/v1/chat/completions", json=body) as response:
        lines = [line async for line in response.aiter_lines()]

    assert response.headers["content-type"].startswith("text/event-stream")
    events = [line for line in lines if line]
    assert all(line.startswith("data: ") for line in events)
    assert events[-1] == "data: [DONE]"
    assert '"usage"' not in "".join(events)


async def test_invalid_json_is_a_bad_request(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert set(error) == {"message", "type", "param", "code"}


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"messages": HELLO}, "model", "missing_required_parameter"),
        ({"model": "fake-gpt"}, "messages", "missing_required_parameter"),
        ({"model": 5, "messages": HELLO}, "model", "invalid_type"),
        ({"model": "fake-gpt", "messages": "hi"}, "messages", "invalid_type"),
        ({"model": "fake-gpt", "messages": [{"content": "x"}]}, "messages[0].role", None),
        ({"model": "fake-gpt", "messages": [{"role": "robot"}]}, "messages[0].role", None),
        ({"model": "fake-gpt", "messages": HELLO, "stream": "yes"}, "stream", "invalid_type"),
        ({"model": "fake-gpt", "messages": HELLO, "max_tokens": 0}, "max_tokens", None),
        (
            {"model": "fake-gpt", "messages": HELLO, "stream_options": {"include_usage": True}},
            "stream_options",
            None,
        ),
    ],
)
async def test_invalid_chat_requests_are_rejected_like_openai(
    http: httpx.AsyncClient, body: dict[str, object], param: str, code: str | None
) -> None:
    response = await http.post("/v1/chat/completions", json=body)

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param
    if code is not None:
        assert error["code"] == code


@pytest.mark.parametrize("payload", [{"model": "fake-embed"}, {"model": "fake-embed", "input": []}])
async def test_invalid_embeddings_requests_are_rejected(
    http: httpx.AsyncClient, payload: dict[str, object]
) -> None:
    response = await http.post("/v1/embeddings", json=payload)

    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


async def test_unknown_api_path_answers_in_openai_shape(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1/nothing-here", json={})

    assert response.status_code == 404
    assert response.json()["error"]["message"] == "Invalid URL (POST /v1/nothing-here)"


WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}},
}


async def test_sdk_offered_tools_gets_a_call_of_the_first(sdk: openai.AsyncOpenAI) -> None:
    completion = await sdk.chat.completions.create(
        model="fake-gpt", messages=HELLO, tools=[WEATHER]
    )

    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls or []
    assert call.type == "function"
    assert call.function.name == "get_weather"
    assert call.function.arguments == '{"query": "Hello there, fake model"}'


async def test_sdk_streamed_tool_call_matches_the_whole_one(sdk: openai.AsyncOpenAI) -> None:
    whole = await sdk.chat.completions.create(model="fake-gpt", messages=HELLO, tools=[WEATHER])
    stream = await sdk.chat.completions.create(
        model="fake-gpt", messages=HELLO, tools=[WEATHER], stream=True
    )
    chunks = [chunk async for chunk in stream]

    calls = [d for c in chunks for d in c.choices[0].delta.tool_calls or []]
    (expected,) = whole.choices[0].message.tool_calls or []
    assert calls[0].id == expected.id
    assert calls[0].function is not None
    assert calls[0].function.name == "get_weather"
    arguments = "".join(c.function.arguments or "" for c in calls if c.function)
    assert arguments == expected.function.arguments
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


async def test_a_tool_result_or_tool_choice_none_gets_text(sdk: openai.AsyncOpenAI) -> None:
    answered = await sdk.chat.completions.create(
        model="fake-gpt",
        messages=[
            *HELLO,
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": "{}"},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ],
        tools=[WEATHER],
    )
    declined = await sdk.chat.completions.create(
        model="fake-gpt", messages=HELLO, tools=[WEATHER], tool_choice="none"
    )

    for completion in (answered, declined):
        assert completion.choices[0].finish_reason == "stop"
        assert completion.choices[0].message.tool_calls is None


async def test_a_tool_without_a_name_is_a_400(sdk: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match=r"tools\[0\]"):
        await sdk.chat.completions.create(
            model="fake-gpt",
            messages=HELLO,
            tools=[{"type": "function", "function": {"parameters": {}}}],  # type: ignore[list-item]
        )
