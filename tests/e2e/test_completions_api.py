"""Legacy completions (POST /v1/completions) through Envoy, with the openai SDK as the client."""

from __future__ import annotations

import uuid

import openai
import pytest

MODEL = "gpt-4o-mini"


@pytest.fixture
def sdk(gateway_url: str, client_api_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway_url, api_key=client_api_key, max_retries=0)


def test_sdk_gets_a_text_completion(sdk: openai.OpenAI) -> None:
    with sdk:
        completion = sdk.completions.create(model=MODEL, prompt="Hello legacy", max_tokens=20)
    assert completion.object == "text_completion"
    assert completion.model == MODEL
    assert completion.choices[0].text == "This is a fake answer to: Hello legacy"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 8


def test_sdk_stream_assembles_the_text_and_usage_when_asked(sdk: openai.OpenAI) -> None:
    with sdk:
        asked = list(
            sdk.completions.create(
                model=MODEL,
                prompt="Hello stream",
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        plain = list(sdk.completions.create(model=MODEL, prompt="Hello stream", stream=True))
    text = "".join(c.choices[0].text for c in asked if c.choices)
    assert text == "This is a fake answer to: Hello stream"
    assert asked[-1].choices == []
    assert asked[-1].usage is not None
    assert asked[-1].usage.completion_tokens == 8
    # The router always asks the provider for usage; a client that did not sees none.
    assert all(c.choices and c.usage is None for c in plain)
    assert "".join(c.choices[0].text for c in plain) == text


def test_repeated_temperature_zero_request_is_a_cache_hit(sdk: openai.OpenAI) -> None:
    prompt = f"Cache me {uuid.uuid4().hex}"
    with sdk:
        first = sdk.completions.with_raw_response.create(model=MODEL, prompt=prompt, temperature=0)
        second = sdk.completions.with_raw_response.create(model=MODEL, prompt=prompt, temperature=0)
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    assert second.parse().choices == first.parse().choices


def test_unknown_field_and_unknown_model_are_openai_errors(sdk: openai.OpenAI) -> None:
    with sdk:
        with pytest.raises(openai.BadRequestError) as bad:
            sdk.completions.create(model=MODEL, prompt="x", extra_body={"max_token": 5})
        with pytest.raises(openai.NotFoundError) as missing:
            sdk.completions.create(model="no-such-model", prompt="x")
    assert bad.value.code == "unknown_parameter"
    assert bad.value.param == "max_token"
    assert missing.value.code == "model_not_found"
