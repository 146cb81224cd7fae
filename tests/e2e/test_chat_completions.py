"""A client's view of the OpenAI-compatible API through Envoy, on the whole running stack."""

from __future__ import annotations

import re

import httpx
import openai
import pytest

from llmproxy.devstack.stack import Stack

HELLO = [{"role": "user", "content": "Hello through Envoy"}]


@pytest.fixture
def sdk(gateway_url: str, client_api_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway_url, api_key=client_api_key, max_retries=0)


def test_openai_sdk_gets_a_completion(sdk: openai.OpenAI) -> None:
    with sdk:
        completion = sdk.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert completion.object == "chat.completion"
    assert completion.model == "gpt-4o-mini"
    assert completion.choices[0].message.content == "This is a fake answer to: Hello through Envoy"
    assert completion.usage is not None
    assert completion.usage.total_tokens > 0


async def test_async_sdk_streams_chunks_with_usage(gateway_url: str, client_api_key: str) -> None:
    async with openai.AsyncOpenAI(
        base_url=gateway_url, api_key=client_api_key, max_retries=0
    ) as client:
        stream = await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=HELLO,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "This is a fake answer to: Hello through Envoy"
    assert len(chunks) > 3
    assert chunks[-1].usage is not None


def test_response_bytes_are_the_providers(
    stack_logs: Stack, gateway_url: str, auth_headers: dict[str, str]
) -> None:
    """The transcoder passes the provider's JSON through unchanged."""
    body = {"model": "gpt-4o-mini", "messages": HELLO}
    fake = stack_logs.config.fake_provider
    direct = httpx.post(f"http://{fake.host}:{fake.port}/v1/chat/completions", json=body)
    proxied = httpx.post(f"{gateway_url}/chat/completions", json=body, headers=auth_headers)
    assert proxied.status_code == 200
    assert proxied.headers["content-type"] == "application/json"
    assert proxied.headers["x-llmproxy-provider"] == "demo"
    # Byte for byte, but for the second the fake provider stamps into "created".
    created = re.compile(rb'"created": \d+')
    assert created.sub(b"", proxied.content) == created.sub(b"", direct.content)
    assert created.search(proxied.content)


def test_stream_is_server_sent_events_ending_with_done(
    gateway_url: str, auth_headers: dict[str, str]
) -> None:
    body = {"model": "gpt-4o-mini", "messages": HELLO, "stream": True}
    url = f"{gateway_url}/chat/completions"
    with httpx.stream("POST", url, json=body, headers=auth_headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert events[-1] == "data: [DONE]"
    assert all(line.startswith("data: ") for line in events)


def test_unknown_model_is_404_not_found_error(sdk: openai.OpenAI) -> None:
    with sdk, pytest.raises(openai.NotFoundError) as raised:
        sdk.chat.completions.create(model="no-such-model", messages=HELLO)
    assert raised.value.status_code == 404
    assert raised.value.code == "model_not_found"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b"[1, 2]", None),
        (b'{"messages": [{"role": "user", "content": "x"}]}', "model"),
        (b'{"model": "gpt-4o-mini"}', "messages"),
        (b'{"model": "gpt-4o-mini", "messages": "hi"}', "messages"),
        (b'{"model": 7, "messages": [{"role": "user", "content": "x"}]}', "model"),
        (b'{"model": "gpt-4o-mini", "messages": [{"role": "user"}], "stream": "yes"}', "stream"),
    ],
)
def test_bad_bodies_get_400_with_openai_error_json(
    gateway_url: str, auth_headers: dict[str, str], body: bytes, param: str | None
) -> None:
    response = httpx.post(
        f"{gateway_url}/chat/completions",
        content=body,
        headers={**auth_headers, "content-type": "application/json"},
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error["message"]


def test_sdk_raises_bad_request_for_invalid_body(sdk: openai.OpenAI) -> None:
    with sdk, pytest.raises(openai.BadRequestError):
        sdk.chat.completions.create(model="gpt-4o-mini", messages=[])


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/v1/nothing"), ("GET", "/v1/chat/completions"), ("POST", "/")]
)
def test_unknown_urls_get_404_json(
    gateway_url: str, auth_headers: dict[str, str], method: str, path: str
) -> None:
    origin = gateway_url.removesuffix("/v1")
    response = httpx.request(method, f"{origin}{path}", headers=auth_headers)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "unknown_url"


def test_oversized_body_is_refused_before_the_router(
    stack_logs: Stack, gateway_url: str, auth_headers: dict[str, str]
) -> None:
    limit = stack_logs.config.envoy.max_request_bytes
    content = "x" * (limit + 1)
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]}
    response = httpx.post(f"{gateway_url}/chat/completions", json=body, headers=auth_headers)
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["type"] == "invalid_request_error"
