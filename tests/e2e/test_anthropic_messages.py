"""The Anthropic Messages API through Envoy, as the anthropic SDK (and Claude Code) sees it.

Every model of the shared stack is answered by the fake provider's OpenAI chat API, so each
request here is translated from Anthropic's shape to a chat completion and back.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import anthropic
import httpx
import pytest
from google.protobuf import duration_pb2
from prometheus_client.parser import text_string_to_metric_families

from llmproxy._gen.fault.v1 import fault_pb2, fault_pb2_grpc
from llmproxy.devstack.stack import Stack
from llmproxy.router.providers import sse
from tests.e2e.conftest import create_key
from tests.harness.control import control_channel
from tests.harness.waiting import eventually_sync

MODEL = "gpt-4o-mini"
HELLO = [{"role": "user", "content": "Hello Claude"}]
WEATHER = {
    "name": "weather",
    "description": "The weather in a city.",
    "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}},
}


@pytest.fixture
def base_url(gateway_url: str) -> str:
    """The gateway as ANTHROPIC_BASE_URL names it: the SDK adds /v1/messages."""
    return gateway_url.removesuffix("/v1")


@pytest.fixture
def client(base_url: str, client_api_key: str) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=base_url, api_key=client_api_key, max_retries=0) as sdk:
        yield sdk


def test_a_message_and_a_multi_turn_conversation_with_system(client: anthropic.Anthropic) -> None:
    message = client.messages.create(model=MODEL, max_tokens=50, messages=HELLO)
    assert message.type == "message"
    assert message.id.startswith("msg_")
    assert message.content[0].type == "text"
    assert message.content[0].text == "This is a fake answer to: Hello Claude"
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0
    assert message.usage.output_tokens > 0

    turns = [
        *HELLO,
        {"role": "assistant", "content": message.content[0].text},
        {"role": "user", "content": [{"type": "text", "text": "And now?"}]},
    ]
    second = client.messages.create(
        model=MODEL, max_tokens=50, system="You are terse.", messages=turns
    )
    assert second.content[0].type == "text"
    assert second.content[0].text == "This is a fake answer to: And now?"


def test_a_stream_gives_the_text_and_the_usage(client: anthropic.Anthropic) -> None:
    with client.messages.stream(model=MODEL, max_tokens=50, messages=HELLO) as stream:
        pieces = list(stream.text_stream)
        message = stream.get_final_message()
    assert len(pieces) > 1
    assert "".join(pieces) == "This is a fake answer to: Hello Claude"
    assert message.content[0].type == "text"
    assert message.content[0].text == "".join(pieces)
    assert message.usage.input_tokens > 0
    assert message.usage.output_tokens > 0
    assert message.stop_reason == "end_turn"


def test_a_tool_use_round_trip(client: anthropic.Anthropic) -> None:
    first = client.messages.create(
        model=MODEL,
        max_tokens=50,
        messages=HELLO,
        tools=[WEATHER],  # type: ignore[list-item]
    )
    (use,) = first.content
    assert use.type == "tool_use"
    assert (use.name, use.input) == ("weather", {"query": "Hello Claude"})
    assert first.stop_reason == "tool_use"
    result = {"type": "tool_result", "tool_use_id": use.id, "content": "Sunny"}
    second = client.messages.create(
        model=MODEL,
        max_tokens=50,
        tools=[WEATHER],  # type: ignore[list-item]
        messages=[
            *HELLO,
            {"role": "assistant", "content": [use.model_dump(exclude_none=True)]},
            {"role": "user", "content": [result]},
        ],  # type: ignore[list-item]
    )
    assert second.content[0].type == "text"
    assert second.content[0].text == "This is a fake answer to: Hello Claude"


def test_errors_are_anthropic_shaped_and_typed(client: anthropic.Anthropic, base_url: str) -> None:
    with (
        anthropic.Anthropic(base_url=base_url, api_key="sk-llmp-nope", max_retries=0) as bad,
        pytest.raises(anthropic.AuthenticationError) as unauthorized,
    ):
        bad.messages.create(model=MODEL, max_tokens=5, messages=HELLO)
    assert unauthorized.value.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "Incorrect API key provided."},
    }
    with pytest.raises(anthropic.BadRequestError) as bad_request:
        client.messages.create(model=MODEL, max_tokens=5, messages=HELLO, extra_body={"top_k": 5})
    assert bad_request.value.type == "invalid_request_error"
    assert (bad_request.value.api_message or "").startswith("top_k: ")
    with pytest.raises(anthropic.NotFoundError) as not_found:
        client.messages.create(model="no-such-model", max_tokens=5, messages=HELLO)
    assert not_found.value.type == "not_found_error"
    # Envoy's own answer, before the transcoder: a body over max_request_bytes.
    big = [{"role": "user", "content": "x" * 5_000_000}]
    with pytest.raises(anthropic.ContentTooLargeError) as too_large:
        client.messages.create(model=MODEL, max_tokens=5, messages=big)
    assert too_large.value.type == "request_too_large"


def test_a_429_after_the_transcoder_is_anthropic_shaped(
    stack_logs: Stack, client: anthropic.Anthropic
) -> None:
    """A fault abort on the messages route: a local reply made after the transcoder rewrote the
    path, as the exact tier's 429s are."""
    name = f"messages-429-{uuid.uuid4().hex[:8]}"
    admin = f"http://{stack_logs.config.envoy.host}:{stack_logs.config.envoy.admin_port}"

    def faults() -> list[str]:
        entries = httpx.get(f"{admin}/runtime", timeout=5).json()["entries"]
        return [k for k in entries if k.startswith("fault.route.messages.")]

    abort = fault_pb2.Fault(abort=fault_pb2.AbortFault(percent=100, http_status=429))
    with control_channel(stack_logs) as channel:
        api = fault_pb2_grpc.FaultServiceStub(channel)
        api.CreateExperiment(
            fault_pb2.CreateExperimentRequest(
                name=name,
                target=fault_pb2.Target(route="messages"),
                faults=[abort],
                severity=fault_pb2.SEVERITY_CRITICAL,
                confirm_critical=True,
                duration=duration_pb2.Duration(seconds=60),
            ),
            timeout=10,
        )
        api.StartExperiment(fault_pb2.StartExperimentRequest(name=name), timeout=10)
        try:
            eventually_sync(faults, what="the abort in Envoy's runtime", timeout_s=5)
            with pytest.raises(anthropic.RateLimitError) as limited:
                client.messages.create(model=MODEL, max_tokens=5, messages=HELLO)
        finally:
            api.StopExperiment(fault_pb2.StopExperimentRequest(name=name), timeout=10)
            eventually_sync(faults, lambda keys: not keys, what="no fault left", timeout_s=5)
    assert limited.value.body == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "fault filter abort"},
    }


def completion_tokens(stack: Stack, tenant: str) -> float:
    """The router's count of tenant's completion tokens on MODEL."""
    router = stack.config.services.router
    url = f"http://{router.host}:{router.metrics_port}/metrics"
    text = httpx.get(url, timeout=5).text
    wanted = {"tenant": tenant, "model": MODEL, "kind": "completion"}
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "llmproxy_usage_tokens_total" and sample.labels == wanted
    )


def test_usage_is_counted_and_a_repeated_deterministic_request_is_cached(
    stack_logs: Stack, base_url: str
) -> None:
    # A tenant of its own: nothing else counts on its usage, or shares its cache entries.
    tenant = f"anthropic-{uuid.uuid4().hex[:8]}"
    key = create_key(stack_logs, tenant=tenant, user="pytest", name="anthropic usage").secret
    body = {"temperature": 0}
    with anthropic.Anthropic(base_url=base_url, api_key=key, max_retries=0) as client:
        first = client.messages.with_raw_response.create(
            model=MODEL, max_tokens=50, messages=HELLO, extra_body=body
        )
        used = first.parse().usage.output_tokens
        # Usage is counted once the answer is complete: poll for it.
        eventually_sync(
            lambda: completion_tokens(stack_logs, tenant),
            lambda counted: counted == used,
            what="the message's tokens counted",
            timeout_s=5,
        )
        again = client.messages.with_raw_response.create(
            model=MODEL, max_tokens=50, messages=HELLO, extra_body=body
        )
    assert (first.headers["x-cache"], again.headers["x-cache"]) == ("MISS", "HIT")
    assert first.headers["x-llmproxy-provider"] == "demo"
    assert again.parse().content == first.parse().content
    assert completion_tokens(stack_logs, tenant) == used  # a hit costs no provider tokens


def test_anthropic_base_url_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, base_url: str, client_api_key: str
) -> None:
    monkeypatch.setenv("ANTHROPIC_BASE_URL", base_url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", client_api_key)
    with anthropic.Anthropic(max_retries=0) as sdk:
        message = sdk.messages.create(model=MODEL, max_tokens=50, messages=HELLO)
    assert message.content[0].type == "text"


def test_claude_code_style_requests(base_url: str, client_api_key: str) -> None:
    """Claude Code posts to /v1/messages?beta=true with x-api-key, beta headers and a stream."""
    headers = {
        "x-api-key": client_api_key,
        "anthropic-version": "2023-06-01",
        "anthropic-beta": "claude-code-20250219",
    }
    body = {
        "model": MODEL,
        "max_tokens": 50,
        "stream": True,
        "system": [
            {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}
        ],
        "messages": HELLO,
        "tools": [WEATHER],
        "tool_choice": {"type": "auto"},
        "metadata": {"user_id": "user-1"},
    }
    url = f"{base_url}/v1/messages?beta=true"
    with httpx.stream("POST", url, json=body, headers=headers, timeout=30) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse.split(response.read())
    names = [(sse.field(e, b"event") or b"").decode() for e in events if not e.startswith(b":")]
    assert names[0] == "message_start"
    assert names[-2:] == ["message_delta", "message_stop"]
    start = json.loads(sse.field(events[names.index("content_block_start")], b"data") or b"{}")
    assert start["content_block"]["type"] == "tool_use"


def test_the_sdk_lists_and_retrieves_models_in_anthropics_shape(
    client: anthropic.Anthropic, stack_logs: Stack
) -> None:
    page = client.models.list(limit=50)  # pagination parameters are ignored: one page
    assert [m.id for m in page.data] == [m.name for m in stack_logs.config.models]
    assert {m.type for m in page.data} == {"model"}
    assert client.models.retrieve("gpt-4o-mini").display_name == "gpt-4o-mini"
    with pytest.raises(anthropic.NotFoundError) as raised:
        client.models.retrieve("no-such-model")
    assert isinstance(raised.value.body, dict)
    assert raised.value.body["error"]["type"] == "not_found_error"
