"""Random Responses API bodies never crash the router: each gets a response or a 4xx OpenAI
error."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmproxy._gen.router.v1 import openai_pb2
from llmproxy.router.apis.responses_request import RESPONSES_FIELDS
from tests.unit.router.fuzzing import Fuzzer, assert_openai_error, fuzz, fuzzer, json_values

text = st.text(max_size=8)
parts = st.fixed_dictionaries(
    {
        "type": st.sampled_from(
            ["input_text", "output_text", "input_image", "input_file", "refusal"]
        )
    },
    optional={
        "text": text,
        "refusal": text,
        "image_url": st.sampled_from(["https://x.invalid/a.png", ""]),
        "file_id": st.none() | text,
        "detail": st.sampled_from(["auto", "low", "high", "original"]),
    },
)
messages = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["user", "assistant", "system", "developer", "tool"]),
        "content": text | st.lists(parts, max_size=3),
    },
    optional={"type": st.just("message")},
)
calls = st.fixed_dictionaries(
    {"type": st.just("function_call"), "call_id": text, "name": text, "arguments": text}
)
outputs = st.fixed_dictionaries(
    {"type": st.just("function_call_output"), "call_id": text, "output": text},
)
other_items = st.fixed_dictionaries(
    {"type": st.sampled_from(["reasoning", "item_reference", "web_search_call"])},
    optional={"id": text},
)
tools = st.fixed_dictionaries(
    {"type": st.sampled_from(["function", "function", "web_search", "mcp"]), "name": text},
    optional={
        "parameters": st.just({"type": "object"}),
        "strict": st.booleans(),
        "description": text,
    },
)
formats = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "json_object", "json_schema"])},
    optional={"name": text, "schema": st.just({"type": "object"})},
)
# Shaped like a Responses request: each field well typed, with values valid or not.
responses_like = st.fixed_dictionaries(
    {
        "model": st.sampled_from(["m", "m", "m", "other", ""]),
        "input": text | st.lists(messages | calls | outputs | other_items, min_size=1, max_size=4),
    },
    optional={
        "instructions": text,
        "tools": st.lists(tools, max_size=2),
        "tool_choice": st.sampled_from(
            ["auto", "none", "required", {"type": "function", "name": "f"}, {"type": "mcp"}]
        ),
        "text": st.fixed_dictionaries({}, optional={"format": formats}),
        "temperature": st.floats(0, 2),
        "max_output_tokens": st.integers(1, 100),
        "stream": st.booleans(),
        "store": st.booleans(),
        "previous_response_id": st.none(),
    },
)
# Anything at all in the Responses fields, and fields of no API.
random_fields = st.dictionaries(
    st.sampled_from(sorted(RESPONSES_FIELDS)) | st.text(max_size=6), json_values, max_size=4
)
bodies = (
    responses_like.map(json.dumps).map(str.encode)
    | random_fields.map(json.dumps).map(str.encode)
    | json_values.map(json.dumps).map(str.encode)
    | st.binary(max_size=32)
)


@pytest.fixture(scope="module")
def fuzz_servicer() -> Iterator[Fuzzer]:
    with fuzzer() as running:
        yield running


@fuzz
@given(raw=bodies)
def test_random_bodies_get_a_response_or_a_4xx(fuzz_servicer: Fuzzer, raw: bytes) -> None:
    request = openai_pb2.CreateResponseRequest(body={"data": raw})
    reply = fuzz_servicer.call(fuzz_servicer.servicer.CreateResponse, request)
    if reply.status != 200:
        assert_openai_error(reply)
    elif reply.content_type == "text/event-stream":
        assert b"event: response.completed\n" in reply.data
    else:
        assert json.loads(reply.data)["status"] == "completed"
