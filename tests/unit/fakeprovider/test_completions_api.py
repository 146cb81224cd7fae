"""The legacy completions routes (OpenAI's and Azure's), through the openai SDK and raw HTTP."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

ANSWER = "This is a fake answer to: Say this is a test"
AZURE = "/openai/deployments/fake-gpt/completions?api-version=2024-10-21"


async def test_sdk_completion(sdk: openai.AsyncOpenAI) -> None:
    completion = await sdk.completions.create(model="fake-gpt", prompt="Say this is a test")

    assert completion.object == "text_completion"
    assert completion.model == "fake-gpt"
    assert completion.id.startswith("cmpl-")
    (choice,) = completion.choices
    assert (choice.index, choice.text, choice.finish_reason) == (0, ANSWER, "stop")
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (5, 11)
    assert completion.usage.total_tokens == 16


async def test_the_same_request_gets_the_same_answer(sdk: openai.AsyncOpenAI) -> None:
    first = await sdk.completions.create(model="fake-gpt", prompt="same", temperature=0)
    second = await sdk.completions.create(model="fake-gpt", prompt="same", temperature=0)
    assert (first.id, first.choices, first.usage) == (second.id, second.choices, second.usage)


async def test_sdk_stream_with_usage_matches_the_whole_answer(sdk: openai.AsyncOpenAI) -> None:
    whole = await sdk.completions.create(model="fake-gpt", prompt="Say this is a test")

    stream = await sdk.completions.create(
        model="fake-gpt",
        prompt="Say this is a test",
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]

    assert all(c.object == "text_completion" for c in chunks)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == ANSWER
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop"
    assert set(finishes[:-1]) == {None}
    assert chunks[-1].choices == []
    assert chunks[-1].usage == whole.usage
    assert all(c.usage is None for c in chunks[:-1])


async def test_stream_without_usage_asked_has_no_usage_chunk(sdk: openai.AsyncOpenAI) -> None:
    stream = await sdk.completions.create(model="fake-gpt", prompt="hi", stream=True)
    chunks = [chunk async for chunk in stream]
    assert all(c.choices for c in chunks)


async def test_prompts_in_every_shape_with_n_copies(sdk: openai.AsyncOpenAI) -> None:
    completion = await sdk.completions.create(
        model="fake-gpt", prompt=["first one", "second"], n=2, max_tokens=7
    )
    texts = [(c.index, c.text, c.finish_reason) for c in completion.choices]
    assert texts == [
        (0, "This is a fake answer to: first", "length"),
        (1, "This is a fake answer to: first", "length"),
        (2, "This is a fake answer to: second", "stop"),
        (3, "This is a fake answer to: second", "stop"),
    ]
    tokens = await sdk.completions.create(model="fake-gpt", prompt=[[1, 2], [3]])
    assert [c.text for c in tokens.choices] == [
        "This is a fake answer to: 1 2",
        "This is a fake answer to: 3",
    ]


async def test_echo_puts_the_prompt_first(sdk: openai.AsyncOpenAI) -> None:
    completion = await sdk.completions.create(model="fake-gpt", prompt="Once. ", echo=True)
    assert completion.choices[0].text == "Once. This is a fake answer to: Once."


async def test_unknown_model_and_bad_prompt_are_refused(sdk: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        await sdk.completions.create(model="gpt-nonexistent", prompt="x")
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as bad:
        await sdk.completions.create(model="fake-gpt", prompt=[1, "a"])  # type: ignore[arg-type]
    assert bad.value.param == "prompt"


async def test_azure_deployment_answers_and_streams(http: httpx.AsyncClient) -> None:
    headers = {"api-key": "k"}
    body = {"model": "ignored", "prompt": "Say this is a test"}
    response = await http.post(AZURE, json=body, headers=headers)
    assert response.status_code == 200
    assert response.json()["model"] == "fake-gpt"
    assert response.json()["choices"][0]["text"] == ANSWER
    streamed = await http.post(AZURE, json={**body, "stream": True}, headers=headers)
    events = [line for line in streamed.text.split("\n\n") if line]
    assert events[-1] == "data: [DONE]"
    texts = [json.loads(e.removeprefix("data: "))["choices"][0]["text"] for e in events[:-1]]
    assert "".join(texts) == ANSWER
    refused = await http.post(AZURE, json=body)
    assert refused.status_code == 401
