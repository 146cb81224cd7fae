"""Random request bodies never crash the router: each gets an answer or a 4xx error in the
shape of its API (OpenAI's for chat completions, Anthropic's for messages)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from google.api import httpbody_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmproxy._gen.router.v1 import anthropic_pb2, openai_pb2
from llmproxy.common.contract import STATUS_HEADER
from llmproxy.router.anthropic_api import AnthropicServicer
from llmproxy.router.providers import sse
from llmproxy.router.service import OpenAIServicer
from llmproxy.router.settings import ModelSettings, ModelTarget, RouterSettings
from tests.unit.router.fakes import FakeClient, MemoryCache

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
chat_like = st.fixed_dictionaries(
    {},
    optional={
        "model": st.sampled_from(["m", "other", ""]) | json_values,
        "messages": st.lists(
            st.fixed_dictionaries({}, optional={"role": json_values, "content": json_values}),
            max_size=3,
        )
        | json_values,
        "stream": st.booleans() | json_values,
    },
)
bodies = (
    st.binary(max_size=64)
    | json_values.map(json.dumps).map(str.encode)
    | chat_like.map(json.dumps).map(str.encode)
)
text_blocks = st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=8)})
blocks = text_blocks | st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "image", "tool_use", "tool_result", "thinking", "x"])},
    optional={
        "text": st.text(max_size=8) | json_values,
        "source": json_values,
        "id": st.just("toolu_1") | json_values,
        "name": st.just("weather") | json_values,
        "input": st.just({}) | json_values,
        "tool_use_id": st.just("toolu_1") | json_values,
        "content": st.text(max_size=8) | json_values,
        "is_error": st.booleans() | json_values,
    },
)
user_turns = st.fixed_dictionaries(
    {
        "role": st.just("user"),
        "content": st.text(max_size=8) | st.lists(blocks, min_size=1, max_size=3),
    }
)
assistant_turns = st.fixed_dictionaries(
    {"role": st.just("assistant"), "content": st.lists(blocks, min_size=1, max_size=2)}
)
# Valid-looking bodies, so that some get answered: with a field or two changed, the rest
# are refused deeper down than the first check.
messages_like = st.fixed_dictionaries(
    {
        "model": st.sampled_from(["m", "other"]),
        "max_tokens": st.integers(1, 50),
        "messages": st.tuples(
            st.lists(st.tuples(user_turns, assistant_turns), max_size=2), user_turns
        ).map(lambda t: [m for pair in t[0] for m in pair] + [t[1]]),
    },
    optional={
        "system": st.text(max_size=8) | st.lists(blocks, max_size=2),
        "tools": st.just([{"name": "weather", "input_schema": {"type": "object"}}]),
        "tool_choice": st.fixed_dictionaries(
            {"type": st.sampled_from(["auto", "any", "tool", "none"])},
            optional={"name": st.just("weather"), "disable_parallel_tool_use": st.booleans()},
        ),
        "stream": st.booleans(),
        "temperature": st.floats(0, 1),
        "stop_sequences": st.lists(st.text(min_size=1, max_size=4), max_size=2),
        "metadata": st.fixed_dictionaries({}, optional={"user_id": st.text(max_size=8)}),
        "thinking": st.sampled_from([{"type": "adaptive"}, {"type": "disabled"}]),
    },
)
changed = st.tuples(
    messages_like,
    st.lists(
        st.tuples(
            st.sampled_from(["model", "max_tokens", "messages", "system", "tools", "top_k"])
            | st.text(max_size=8),
            json_values,
        ),
        max_size=2,
    ),
).map(lambda t: {**t[0], **dict(t[1])})
messages_bodies = (
    st.binary(max_size=64)
    | json_values.map(json.dumps).map(str.encode)
    | changed.map(json.dumps).map(str.encode)
)


class Context:
    def __init__(self) -> None:
        self.metadata: dict[str, str] = {}

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return ()

    async def send_initial_metadata(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.metadata.update(metadata)


@pytest.fixture(scope="module")
def runner() -> Iterator[tuple[asyncio.Runner, OpenAIServicer]]:
    """One event loop and one servicer for every example."""
    with asyncio.Runner() as loop:
        model = ModelSettings(name="m", targets=[ModelTarget(provider="p", model="m")])
        servicer = OpenAIServicer(
            [model], {"p": FakeClient("p")}, RouterSettings(), cache=MemoryCache()
        )
        yield loop, servicer


class VersionedContext(Context):
    """A request that carries the anthropic-version header, as the SDKs send it."""

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("anthropic-version", "2023-06-01"),)


async def answer(servicer: OpenAIServicer, raw: bytes) -> tuple[dict[str, str], list[Any]]:
    context = Context()
    request = openai_pb2.CreateChatCompletionRequest(body={"data": raw})
    replies = [r async for r in servicer.CreateChatCompletion(request, context)]  # type: ignore[arg-type]
    return context.metadata, replies


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(raw=bodies)
def test_random_bodies_get_an_answer_or_a_4xx(
    runner: tuple[asyncio.Runner, OpenAIServicer], raw: bytes
) -> None:
    loop, servicer = runner
    metadata, replies = loop.run(answer(servicer, raw))
    assert replies, "every request gets a body"
    status = int(metadata.get(STATUS_HEADER, "200"))
    assert status in (200, 400, 404)
    if status != 200:
        error = json.loads(replies[0].data)["error"]
        assert error["message"]
        assert error["type"] == "invalid_request_error"


async def message(servicer: OpenAIServicer, raw: bytes) -> tuple[dict[str, str], list[Any]]:
    context = VersionedContext()
    request = anthropic_pb2.CreateMessageRequest(body=httpbody_pb2.HttpBody(data=raw))
    replies = [r async for r in AnthropicServicer(servicer).CreateMessage(request, context)]  # type: ignore[arg-type]
    return context.metadata, replies


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(raw=messages_bodies)
def test_random_messages_bodies_get_an_answer_or_an_anthropic_4xx(
    runner: tuple[asyncio.Runner, OpenAIServicer], raw: bytes
) -> None:
    loop, servicer = runner
    metadata, replies = loop.run(message(servicer, raw))
    assert replies, "every request gets a body"
    status = int(metadata.get(STATUS_HEADER, "200"))
    assert status in (200, 400, 404)
    data = b"".join(r.data for r in replies)
    if status == 200 and replies[0].content_type == "text/event-stream":
        names = [sse.field(event, b"event") for event in sse.split(data)]
        assert names[0] == b"message_start"
        assert names[-1] == b"message_stop"
        return
    body = json.loads(data)
    if status == 200:
        assert body["type"] == "message"
    else:
        assert body["type"] == "error"
        assert body["error"]["message"]
        expected = "not_found_error" if status == 404 else "invalid_request_error"
        assert body["error"]["type"] == expected
