"""The rest of the OpenAI surface through Envoy: embeddings, models, cache, typed SDK errors."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmproxy.devstack.stack import Stack


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


def test_stream_chunks_arrive_as_the_provider_sends_them(
    gateway_url: str, auth_headers: dict[str, str], provider_knobs: str
) -> None:
    """Not buffered: with 0.4 s between provider chunks, the client sees them spread out."""
    httpx.put(provider_knobs, json={"chunk_delay_ms": 400}).raise_for_status()
    body = {
        "model": "gpt-4o-mini",
        "stream": True,
        "messages": [{"role": "user", "content": "one two three four five six"}],
    }
    arrivals = []
    with httpx.stream(
        "POST", f"{gateway_url}/chat/completions", json=body, headers=auth_headers, timeout=30
    ) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                arrivals.append(time.monotonic())
    httpx.put(provider_knobs, json={"chunk_delay_ms": 0}).raise_for_status()
    assert len(arrivals) >= 4
    # Buffering would deliver everything at once at the end; here the first chunk came at
    # least two provider delays before the last.
    assert arrivals[-1] - arrivals[0] >= 0.8


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.one_of(
        st.binary(max_size=200),
        st.dictionaries(
            st.sampled_from(["model", "messages", "stream", "temperature", "n", "max_tokens", "x"]),
            st.one_of(
                st.none(),
                st.booleans(),
                st.integers(-5, 5),
                st.text(max_size=5),
                st.just("gpt-4o-mini"),
                st.just([{"role": "user", "content": "hi"}]),
            ),
            max_size=6,
        ).map(lambda d: json.dumps(d).encode()),
    )
)
def test_random_bodies_through_envoy_never_get_a_5xx(
    gateway_url: str, auth_headers: dict[str, str], body: bytes
) -> None:
    response = httpx.post(
        f"{gateway_url}/chat/completions",
        content=body,
        headers={**auth_headers, "content-type": "application/json"},
    )
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert response.json()["error"]["message"]


def test_unknown_query_parameters_are_ignored(gateway_url: str, client_api_key: str) -> None:
    """As OpenAI and Anthropic ignore them; Claude Code sends `?beta=true`."""
    response = httpx.post(
        f"{gateway_url}/chat/completions?beta=true&trace=1",
        headers={"authorization": f"Bearer {client_api_key}"},
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert response.status_code == 200, response.text
    assert response.json()["object"] == "chat.completion"
