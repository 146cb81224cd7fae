"""The rest of the OpenAI surface through Envoy: embeddings, models, cache, typed SDK errors."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from llmproxy.devstack.stack import Stack

pytestmark = pytest.mark.e2e


@pytest.fixture
def sdk(gateway_url: str, client_api_key: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway_url, api_key=client_api_key, max_retries=0) as client:
        yield client


@pytest.fixture
def provider_knobs(stack_logs: Stack) -> Iterator[str]:
    """The fake provider's knob URL; knobs are reset after the test."""
    fake = stack_logs.config.fake_provider
    url = f"http://{fake.host}:{fake.port}/_fake/knobs"
    yield url
    httpx.put(url, json={"outage": "none", "error_rate": 0, "latency_ms": 0})


def test_embeddings_through_the_sdk_are_cached(sdk: openai.OpenAI) -> None:
    first = sdk.embeddings.with_raw_response.create(model="gpt-4o-mini", input=["a", "b c"])
    second = sdk.embeddings.with_raw_response.create(model="gpt-4o-mini", input=["a", "b c"])
    assert second.headers["x-cache"] == "HIT"
    assert first.parse().data[1].embedding == second.parse().data[1].embedding
    assert len(first.parse().data) == 2


def test_models_list_and_retrieve(sdk: openai.OpenAI, stack_logs: Stack) -> None:
    ids = [m.id for m in sdk.models.list()]
    assert ids == [m.name for m in stack_logs.config.models]
    assert sdk.models.retrieve("gpt-4o-mini").id == "gpt-4o-mini"
    with pytest.raises(openai.NotFoundError):
        sdk.models.retrieve("no-such-model")


def test_deterministic_requests_hit_the_cache_through_envoy(sdk: openai.OpenAI) -> None:
    messages = [{"role": "user", "content": "cache me through envoy"}]
    first = sdk.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=messages, temperature=0
    )
    second = sdk.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=messages, temperature=0
    )
    sampled = sdk.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=messages, temperature=0.9
    )
    assert [r.headers["x-cache"] for r in (first, second, sampled)] == ["MISS", "HIT", "BYPASS"]
    assert first.parse().choices[0].message.content == second.parse().choices[0].message.content


def test_unknown_parameter_is_a_bad_request(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        sdk.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "x"}],
            extra_body={"base_url": "http://elsewhere.invalid"},
        )
    assert raised.value.code == "unknown_parameter"
    assert raised.value.param == "base_url"


def test_provider_rate_limit_reaches_the_sdk_as_rate_limit_error(
    sdk: openai.OpenAI, provider_knobs: str
) -> None:
    httpx.put(provider_knobs, json={"error_rate": 1.0, "error_status": 429}).raise_for_status()
    with pytest.raises(openai.RateLimitError) as raised:
        sdk.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
        )
    assert raised.value.status_code == 429


def test_provider_outage_is_an_api_status_error(sdk: openai.OpenAI, provider_knobs: str) -> None:
    httpx.put(provider_knobs, json={"outage": "503"}).raise_for_status()
    with pytest.raises(openai.APIStatusError) as raised:
        sdk.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}]
        )
    assert raised.value.status_code in (502, 503)
    assert raised.value.body["type"] == "upstream_error"  # type: ignore[index]
