"""POST /v1/responses through the servicer, with the official openai SDK as the client.

The SDK's HTTP transport is replaced by a call to CreateResponse, so the SDK's own request
bodies reach the router and the router's answers reach the SDK's own parsers and stream
accumulator, strictly validated against its types, without a network.
"""

from __future__ import annotations

import json
from typing import Any

import httpx2
import openai
import pytest

from llmproxy._gen.router.v1 import openai_pb2
from llmproxy.common.contract import STATUS_HEADER
from llmproxy.router.providers import sse
from llmproxy.router.settings import ModelSettings, ModelTarget
from tests.unit.router.fakes import Context, failure, stream_events
from tests.unit.router.servicers import OneTarget

MODEL = ModelSettings(name="m", targets=[ModelTarget(provider="p", model="up")])
TOOL = {"type": "function", "name": "weather", "parameters": {"type": "object"}, "strict": False}


class Gateway(OneTarget):
    """The servicer behind an AsyncOpenAI client whose transport calls CreateResponse."""

    def __init__(self, script: list[Any] | None = None, **settings: Any) -> None:
        super().__init__(MODEL, script, **settings)
        self.raw: list[bytes] = []  # every answer body, as the client got it

    async def _send(self, request: httpx2.Request) -> httpx2.Response:
        context = Context()
        body = openai_pb2.CreateResponseRequest(body={"data": await request.aread()})
        replies = [r async for r in self.servicer.CreateResponse(body, context)]  # type: ignore[arg-type]
        status = int(context.metadata.pop(STATUS_HEADER, "200"))
        data = b"".join(r.data for r in replies)
        self.raw.append(data)
        headers = {"content-type": replies[0].content_type, **context.metadata}
        return httpx2.Response(status, content=data, headers=headers)

    def sdk(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url="http://gateway.invalid/v1",
            api_key="sk-test",
            max_retries=0,
            _strict_response_validation=True,
            http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(self._send)),
        )


def completion(message: dict[str, Any], finish_reason: str = "stop", **usage: Any) -> bytes:
    return json.dumps(
        {
            "object": "chat.completion",
            "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
            "usage": {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12, **usage},
        }
    ).encode()


def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
    return sse.encode({"choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]})


USAGE_CHUNK = sse.encode(
    {
        "choices": [],
        "usage": {
            "prompt_tokens": 7,
            "completion_tokens": 5,
            "total_tokens": 12,
            "prompt_tokens_details": {"cached_tokens": 4},
            "completion_tokens_details": {"reasoning_tokens": 2},
        },
    }
)


def call_delta(index: int, arguments: str, **start: str) -> dict[str, Any]:
    function = {"arguments": arguments, **({"name": start["name"]} if "name" in start else {})}
    call = {"index": index, "function": function}
    if "id" in start:
        call.update(id=start["id"], type="function")
    return {"tool_calls": [call]}


async def test_string_input_gets_a_response_the_sdk_reads() -> None:
    gateway = Gateway()
    async with gateway.sdk() as client:
        response = await client.responses.create(model="m", input="Hi", instructions="Be brief.")
    assert response.object == "response"
    assert response.id.startswith("resp_")
    assert response.status == "completed"
    assert response.output_text == "ok"
    assert response.instructions == "Be brief."
    assert response.to_dict()["store"] is False
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens) == (3, 2)
    assert response.usage.total_tokens == 5
    assert gateway.provider.calls == [
        {
            "model": "up",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
            ],
        }
    ]


async def test_store_true_is_answered_statelessly() -> None:
    async with Gateway().sdk() as client:
        response = await client.responses.create(model="m", input="Hi", store=True)
    assert response.to_dict()["store"] is False


async def test_tool_calls_become_function_call_items() -> None:
    message = {
        "role": "assistant",
        "content": "Looking.",
        "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}
        ],
    }
    gateway = Gateway([completion(message, "tool_calls")])
    async with gateway.sdk() as client:
        response = await client.responses.create(model="m", input="Weather?", tools=[TOOL])  # type: ignore[list-item]
    text, call = response.output
    assert text.type == "message"
    assert response.output_text == "Looking."
    assert call.type == "function_call"
    assert (call.call_id, call.name, call.arguments) == ("call_1", "weather", "{}")
    assert call.id is not None
    assert call.id.startswith("fc_")
    assert response.tools[0].type == "function"
    assert gateway.provider.calls[0]["tools"][0]["function"]["name"] == "weather"


async def test_a_tool_round_trip_sends_the_output_back_as_a_tool_message() -> None:
    gateway = Gateway()
    async with gateway.sdk() as client:
        await client.responses.create(
            model="m",
            input=[
                {"role": "user", "content": "Weather?"},
                {
                    "type": "function_call",
                    "call_id": "call_1",
                    "name": "weather",
                    "arguments": "{}",
                },
                {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
            ],
            tools=[TOOL],  # type: ignore[list-item]
        )
    messages = gateway.provider.calls[0]["messages"]
    assert messages[1]["tool_calls"][0]["id"] == "call_1"
    assert messages[2] == {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}


async def test_cut_answers_are_incomplete_with_the_reason() -> None:
    answer = completion({"role": "assistant", "content": "Long"}, "length")
    gateway = Gateway([answer])
    async with gateway.sdk() as client:
        response = await client.responses.create(model="m", input="Hi", max_output_tokens=16)
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output_text == "Long"
    assert response.max_output_tokens == 16
    assert gateway.provider.calls[0]["max_completion_tokens"] == 16


async def test_refusals_and_usage_details_are_carried_over() -> None:
    answer = completion(
        {"role": "assistant", "content": None, "refusal": "No."},
        prompt_tokens_details={"cached_tokens": 4},
        completion_tokens_details={"reasoning_tokens": 2},
    )
    async with Gateway([answer]).sdk() as client:
        response = await client.responses.create(model="m", input="Hi")
    message = response.output[0]
    assert message.type == "message"
    assert message.content[0].type == "refusal"
    assert response.usage is not None
    assert response.usage.input_tokens_details.cached_tokens == 4
    assert response.usage.output_tokens_details.reasoning_tokens == 2


async def test_stream_text_assembles_in_the_sdk_with_usage() -> None:
    gateway = Gateway()
    async with (
        gateway.sdk() as client,
        client.responses.stream(model="m", input="Hi") as stream,
    ):
        events = [event async for event in stream]
        final = await stream.get_final_response()
    assert [e.type for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert final.output_text == "ab"
    assert final.status == "completed"
    assert final.usage is not None
    assert final.usage.total_tokens == 5
    assert gateway.provider.calls[0]["stream_options"] == {"include_usage": True}
    assert b"event: response.created\ndata: " in gateway.raw[0]


async def test_stream_of_interleaved_text_and_tool_calls() -> None:
    events = [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Checking"}),
        chunk(call_delta(0, "", id="call_a", name="weather")),
        chunk(call_delta(1, '{"city":', id="call_b", name="weather")),
        chunk(call_delta(0, '{"city": "Paris"}')),
        chunk(call_delta(1, '"Rome"}')),
        chunk({"content": " both."}),
        chunk({}, "tool_calls"),
        USAGE_CHUNK,
        sse.DONE,
    ]
    gateway = Gateway([events])
    async with (
        gateway.sdk() as client,
        client.responses.stream(model="m", input="Hi", tools=[TOOL]) as stream,  # type: ignore[list-item]
    ):
        seen = [event async for event in stream]
        final = await stream.get_final_response()
    kinds = [e.type for e in seen]
    assert kinds.count("response.function_call_arguments.delta") == 3
    assert kinds.count("response.function_call_arguments.done") == 2
    assert kinds.count("response.output_item.done") == 3
    assert final.output_text == "Checking both."
    calls = [item for item in final.output if item.type == "function_call"]
    assert [(c.call_id, c.arguments) for c in calls] == [
        ("call_a", '{"city": "Paris"}'),
        ("call_b", '{"city":"Rome"}'),
    ]
    assert final.usage is not None
    assert final.usage.input_tokens_details.cached_tokens == 4
    assert final.usage.output_tokens_details.reasoning_tokens == 2


async def test_stream_cut_by_max_tokens_ends_incomplete() -> None:
    events = [chunk({"content": "Lo"}), chunk({"content": "ng"}, "length"), USAGE_CHUNK, sse.DONE]
    async with Gateway([events]).sdk() as client:
        stream = await client.responses.create(model="m", input="Hi", stream=True)
        seen = [event async for event in stream]
    last = seen[-1]
    assert last.type == "response.incomplete"
    assert last.response.status == "incomplete"
    assert last.response.incomplete_details is not None
    assert last.response.incomplete_details.reason == "max_output_tokens"
    assert last.response.output_text == "Long"


async def read_until_error(
    client: openai.AsyncOpenAI,
) -> tuple[list[Any], openai.APIError]:
    seen: list[Any] = []
    stream = await client.responses.create(model="m", input="Hi", stream=True)

    async def read() -> None:
        async for event in stream:
            seen.append(event)

    with pytest.raises(openai.APIError) as raised:
        await read()
    return seen, raised.value


async def test_stream_broken_midway_fails_and_the_sdk_raises() -> None:
    gateway = Gateway([[*stream_events()[:1], failure(502)]])
    async with gateway.sdk() as client:
        seen, error = await read_until_error(client)
    assert [e.type for e in seen][-3:] == [
        "response.content_part.added",
        "response.output_text.delta",
        "response.failed",
    ]
    failed = seen[-1].response
    assert failed.status == "failed"
    assert failed.error.code == "server_error"
    assert failed.output[0].status == "incomplete"
    assert "stream broke" in error.message
    assert gateway.cache.entries == {}


async def test_stream_failing_before_its_first_event_still_starts_the_response() -> None:
    # Keep-alives go out first, so the failure can only be told in the stream.
    gateway = Gateway([failure(400)], stream_keepalive_s=0.01)
    gateway.provider.delay_s = 0.05
    async with gateway.sdk() as client:
        seen, error = await read_until_error(client)
    assert [e.type for e in seen] == ["response.created", "response.in_progress", "response.failed"]
    assert error.message
    assert gateway.raw[0].startswith(b": keepalive\n\n")


async def test_a_provider_error_inside_its_stream_fails_the_response() -> None:
    broken = sse.encode({"error": {"message": "overloaded", "type": "server_error"}})
    async with Gateway([[chunk({"content": "a"}), broken]]).sdk() as client:
        seen, error = await read_until_error(client)
    assert seen[-1].type == "response.failed"
    assert seen[-1].response.error.message == "overloaded"
    assert error.message == "overloaded"


async def test_deterministic_requests_are_cached_and_shared_with_chat() -> None:
    gateway = Gateway()
    async with gateway.sdk() as client:
        first = await client.responses.with_raw_response.create(
            model="m", input="Hi", temperature=0
        )
        second = await client.responses.with_raw_response.create(
            model="m", input="Hi", temperature=0
        )
        streamed = await client.responses.with_raw_response.create(
            model="m", input="Hi", temperature=0, stream=True
        )
        again = await client.responses.with_raw_response.create(
            model="m", input="Hi", temperature=0, stream=True
        )
    assert [r.headers["x-cache"] for r in (first, second, streamed, again)] == [
        "MISS",
        "HIT",
        "MISS",
        "HIT",
    ]
    assert second.parse().output_text == "ok"
    assert second.parse().id != first.parse().id
    events = [event async for event in again.parse()]
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == "ab"
    assert len(gateway.provider.calls) == 2
    # The same question asked as a chat completion is the same cache entry.
    context = Context()
    chat = {"model": "m", "messages": [{"role": "user", "content": "Hi"}], "temperature": 0}
    request = openai_pb2.CreateChatCompletionRequest(body={"data": json.dumps(chat).encode()})
    [reply] = [r async for r in gateway.servicer.CreateChatCompletion(request, context)]  # type: ignore[arg-type]
    assert context.metadata["x-cache"] == "HIT"
    assert json.loads(reply.data)["choices"][0]["message"]["content"] == "ok"


async def test_usage_is_recorded_for_answers_and_streams() -> None:
    gateway = Gateway()
    async with gateway.sdk() as client:
        await client.responses.create(model="m", input="Hi")
        stream = await client.responses.create(model="m", input="Hi", stream=True)
        [event async for event in stream]
    assert [(model, usage.prompt_tokens) for _, model, usage in gateway.usage.records] == [
        ("m", 3),
        ("m", 3),
    ]


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"previous_response_id": "resp_1"}, "previous_response_id"),
        ({"conversation": "conv_1"}, "conversation"),
        ({"background": True}, "background"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
    ],
)
async def test_sdk_raises_bad_request_naming_the_parameter(
    extra: dict[str, Any], param: str
) -> None:
    gateway = Gateway()
    async with gateway.sdk() as client:
        with pytest.raises(openai.BadRequestError) as raised:
            await client.responses.create(**{"model": "m", "input": "Hi", **extra})
    assert raised.value.param == param
    assert not gateway.provider.calls


async def test_unknown_fields_and_models_get_openai_errors() -> None:
    async with Gateway().sdk() as client:
        with pytest.raises(openai.BadRequestError) as unknown:
            await client.responses.create(model="m", input="Hi", extra_body={"max_tokens": 5})
        with pytest.raises(openai.NotFoundError) as missing:
            await client.responses.create(model="nope", input="Hi")
    assert unknown.value.code == "unknown_parameter"
    assert unknown.value.param == "max_tokens"
    assert missing.value.code == "model_not_found"


async def test_a_providers_rejection_is_relayed_with_its_status() -> None:
    async with Gateway([failure(400)]).sdk() as client:
        with pytest.raises(openai.BadRequestError) as raised:
            await client.responses.create(model="m", input="Hi")
    assert raised.value.message == "Error code: 400 - upstream says no"
