"""A client's view of the OpenAI-compatible API through Envoy, on the whole running stack."""

from __future__ import annotations

import httpx
import openai
import pytest

from llmproxy.devstack.stack import Stack

pytestmark = pytest.mark.e2e


def base_url(stack: Stack) -> str:
    envoy = stack.config.envoy
    return f"http://{envoy.host}:{envoy.listener_port}/v1"


HELLO = [{"role": "user", "content": "Hello through Envoy"}]


def test_openai_sdk_gets_a_completion(stack_logs: Stack) -> None:
    with openai.OpenAI(base_url=base_url(stack_logs), api_key="unused", max_retries=0) as client:
        completion = client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert completion.object == "chat.completion"
    assert completion.model == "gpt-4o-mini"
    assert completion.choices[0].message.content == "This is a fake answer to: Hello through Envoy"
    assert completion.usage is not None
    assert completion.usage.total_tokens > 0


async def test_async_sdk_streams_chunks_with_usage(stack_logs: Stack) -> None:
    async with openai.AsyncOpenAI(
        base_url=base_url(stack_logs), api_key="unused", max_retries=0
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


def test_response_bytes_are_the_providers(stack_logs: Stack) -> None:
    """The transcoder passes the provider's JSON through unchanged."""
    body = {"model": "gpt-4o-mini", "messages": HELLO}
    fake = stack_logs.config.fake_provider
    direct = httpx.post(f"http://{fake.host}:{fake.port}/v1/chat/completions", json=body)
    proxied = httpx.post(f"{base_url(stack_logs)}/chat/completions", json=body)
    assert proxied.status_code == 200
    assert proxied.headers["content-type"] == "application/json"
    assert proxied.headers["x-llmproxy-provider"] == "demo"
    assert proxied.content == direct.content


def test_stream_is_server_sent_events_ending_with_done(stack_logs: Stack) -> None:
    body = {"model": "gpt-4o-mini", "messages": HELLO, "stream": True}
    with httpx.stream("POST", f"{base_url(stack_logs)}/chat/completions", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line]
    assert events[-1] == "data: [DONE]"
    assert all(line.startswith("data: ") for line in events)


def test_unknown_model_is_404_not_found_error(stack_logs: Stack) -> None:
    with (
        openai.OpenAI(base_url=base_url(stack_logs), api_key="unused", max_retries=0) as client,
        pytest.raises(openai.NotFoundError) as raised,
    ):
        client.chat.completions.create(model="no-such-model", messages=HELLO)
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
    stack_logs: Stack, body: bytes, param: str | None
) -> None:
    response = httpx.post(
        f"{base_url(stack_logs)}/chat/completions",
        content=body,
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error["message"]


def test_sdk_raises_bad_request_for_invalid_body(stack_logs: Stack) -> None:
    with (
        openai.OpenAI(base_url=base_url(stack_logs), api_key="unused", max_retries=0) as client,
        pytest.raises(openai.BadRequestError),
    ):
        client.chat.completions.create(model="gpt-4o-mini", messages=[])


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/v1/nothing"), ("GET", "/v1/chat/completions"), ("POST", "/")]
)
def test_unknown_urls_get_404_json(stack_logs: Stack, method: str, path: str) -> None:
    envoy = stack_logs.config.envoy
    response = httpx.request(method, f"http://{envoy.host}:{envoy.listener_port}{path}")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "unknown_url"


def test_oversized_body_is_refused_before_the_router(stack_logs: Stack) -> None:
    limit = stack_logs.config.envoy.max_request_bytes
    content = "x" * (limit + 1)
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]}
    response = httpx.post(f"{base_url(stack_logs)}/chat/completions", json=body)
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["type"] == "invalid_request_error"
