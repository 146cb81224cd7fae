"""Random request bodies never crash the router: each gets an answer or a 4xx error in the
shape of its API (OpenAI's for chat completions, Anthropic's for messages)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from google.api import httpbody_pb2
from hypothesis import given
from hypothesis import strategies as st

from llmproxy._gen.router.v1 import anthropic_pb2, openai_pb2
from llmproxy.router.anthropic_api import AnthropicServicer
from llmproxy.router.providers import sse
from tests.unit.router.fuzzing import Fuzzer, assert_openai_error, fuzz, fuzzer, json_values

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


@pytest.fixture(scope="module")
def fuzz_servicer() -> Iterator[Fuzzer]:
    with fuzzer() as running:
        yield running


@fuzz
@given(raw=bodies)
def test_random_bodies_get_an_answer_or_a_4xx(fuzz_servicer: Fuzzer, raw: bytes) -> None:
    request = openai_pb2.CreateChatCompletionRequest(body={"data": raw})
    reply = fuzz_servicer.call(fuzz_servicer.servicer.CreateChatCompletion, request)
    if reply.status != 200:
        assert_openai_error(reply)


# The header the Anthropic SDKs send with every request.
VERSION = {"anthropic-version": "2023-06-01"}


@fuzz
@given(raw=messages_bodies)
def test_random_messages_bodies_get_an_answer_or_an_anthropic_4xx(
    fuzz_servicer: Fuzzer, raw: bytes
) -> None:
    request = anthropic_pb2.CreateMessageRequest(body=httpbody_pb2.HttpBody(data=raw))
    rpc = AnthropicServicer(fuzz_servicer.servicer).CreateMessage
    reply = fuzz_servicer.call(rpc, request, VERSION)
    if reply.status == 200 and reply.content_type == "text/event-stream":
        names = [sse.field(event, b"event") for event in sse.split(reply.data)]
        assert names[0] == b"message_start"
        assert names[-1] == b"message_stop"
        return
    body = json.loads(reply.data)
    if reply.status == 200:
        assert body["type"] == "message"
    else:
        assert body["type"] == "error"
        assert body["error"]["message"]
        expected = "not_found_error" if reply.status == 404 else "invalid_request_error"
        assert body["error"]["type"] == expected
