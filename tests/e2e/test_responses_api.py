"""POST /v1/responses through Envoy, with the official openai SDK, on the whole running stack."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from llmproxy.devstack.stack import Stack
from tests.e2e.conftest import create_key
from tests.harness.waiting import eventually_sync

MODEL = "gpt-4o-mini"
TENANT = "responses-e2e"
ANSWER = "This is a fake answer to: "
WEATHER = {
    "type": "function",
    "name": "weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
    "strict": False,
}


@pytest.fixture(scope="module")
def api_key(stack: Stack) -> str:
    """A key of a tenant of these tests' own, so that its usage is theirs alone."""
    return create_key(stack, tenant=TENANT, user="pytest", name="responses e2e").secret


@pytest.fixture
def sdk(gateway_url: str, api_key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway_url, api_key=api_key, max_retries=0)


def test_string_input(sdk: openai.OpenAI) -> None:
    with sdk:
        response = sdk.responses.create(model=MODEL, input="Hello through Envoy")
    assert response.id.startswith("resp_")
    assert response.status == "completed"
    assert response.output_text == ANSWER + "Hello through Envoy"
    assert response.to_dict()["store"] is True  # stored unless the request says store: false
    assert response.usage is not None
    assert response.usage.total_tokens > 0


def test_message_list_with_instructions(sdk: openai.OpenAI) -> None:
    with sdk:
        response = sdk.responses.create(
            model=MODEL,
            instructions="Be brief.",
            input=[
                {"role": "user", "content": "First question"},
                {"role": "assistant", "content": "First answer"},
                {"role": "user", "content": [{"type": "input_text", "text": "Second question"}]},
            ],
        )
    assert response.output_text == ANSWER + "Second question"
    assert response.instructions == "Be brief."


def test_stream_deltas_assemble_the_final_text_with_usage(sdk: openai.OpenAI) -> None:
    with sdk, sdk.responses.stream(model=MODEL, input="Stream through Envoy") as stream:
        events = list(stream)
        final = stream.get_final_response()
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) > 1
    assert "".join(deltas) == final.output_text == ANSWER + "Stream through Envoy"
    assert events[0].type == "response.created"
    assert events[-1].type == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert final.usage is not None
    assert final.usage.output_tokens > 0


def test_tool_round_trip(sdk: openai.OpenAI) -> None:
    question = "Weather in Paris?"
    with sdk:
        first = sdk.responses.create(model=MODEL, input=question, tools=[WEATHER])  # type: ignore[list-item]
        [call] = first.output
        assert call.type == "function_call"
        assert call.name == "weather"
        assert json.loads(call.arguments) == {"query": question}
        # The client runs the tool and sends the whole conversation back (store: false
        # clients do so), the earlier output items as input.
        conversation: list[Any] = [{"role": "user", "content": question}, *first.output]
        conversation.append(
            {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny"}
        )
        second = sdk.responses.create(model=MODEL, input=conversation, tools=[WEATHER])  # type: ignore[list-item]
    assert [item.type for item in second.output] == ["message"]
    assert second.output_text == ANSWER + question


def test_json_mode_reaches_the_provider_as_response_format(sdk: openai.OpenAI) -> None:
    prompt = f"JSON please {uuid.uuid4()}"
    with sdk:
        response = sdk.responses.create(
            model=MODEL, input=prompt, temperature=0, text={"format": {"type": "json_object"}}
        )
        # The chat completion with that response_format is the very request the provider got:
        # it is answered from the entry the Responses request left in the cache.
        chat = sdk.chat.completions.with_raw_response.create(
            model=MODEL,
            messages=[{"role": "user", "content": prompt}],
            temperature=0,
            response_format={"type": "json_object"},
        )
    assert response.text is not None
    assert response.text.format is not None
    assert response.text.format.type == "json_object"
    assert chat.headers["x-cache"] == "HIT"
    assert chat.parse().choices[0].message.content == response.output_text


def prompt_tokens(stack: Stack) -> float:
    """The prompt tokens the router counted for this module's tenant."""
    router = stack.config.services.router
    text = httpx.get(f"http://{router.host}:{router.metrics_port}/metrics", timeout=5).text
    wanted = {"tenant": TENANT, "model": MODEL, "kind": "prompt"}
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "llmproxy_usage_tokens_total" and sample.labels == wanted
    )


def test_usage_is_counted_and_repeats_come_from_the_cache(
    stack_logs: Stack, sdk: openai.OpenAI
) -> None:
    before = prompt_tokens(stack_logs)
    prompt = f"Cache me {uuid.uuid4()}"
    with sdk:
        first = sdk.responses.with_raw_response.create(model=MODEL, input=prompt, temperature=0)
        second = sdk.responses.with_raw_response.create(model=MODEL, input=prompt, temperature=0)
    assert [first.headers["x-cache"], second.headers["x-cache"]] == ["MISS", "HIT"]
    assert second.parse().output_text == first.parse().output_text == ANSWER + prompt
    usage = first.parse().usage
    assert usage is not None
    # Usage is recorded once the answer is complete, and only for the provider call.
    eventually_sync(
        lambda: prompt_tokens(stack_logs),
        lambda now: now == before + usage.input_tokens,
        what="the prompt tokens of the first request counted",
        timeout_s=10,
    )


@pytest.mark.parametrize(
    ("extra", "param", "words"),
    [
        ({"conversation": "conv_123"}, "conversation", "keeps no conversations"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type", "'web_search'"),
        ({"extra_body": {"max_tokens": 5}}, "max_tokens", "max_tokens"),
    ],
)
def test_bad_requests_raise_bad_request_error(
    sdk: openai.OpenAI, extra: dict[str, Any], param: str, words: str
) -> None:
    with sdk, pytest.raises(openai.BadRequestError) as raised:
        sdk.responses.create(model=MODEL, input="Hi", **extra)
    assert raised.value.status_code == 400
    assert raised.value.param == param
    assert words in raised.value.message


def test_previous_response_id_continues_a_stored_conversation(sdk: openai.OpenAI) -> None:
    with sdk:
        first = sdk.responses.create(model=MODEL, input="Name a colour", instructions="Be brief.")
        second = sdk.responses.create(
            model=MODEL, input="And another one", previous_response_id=first.id
        )
        retrieved = sdk.responses.retrieve(second.id)
        sdk.responses.delete(second.id)
        with pytest.raises(openai.NotFoundError) as gone:
            sdk.responses.retrieve(second.id)
    assert second.output_text == ANSWER + "And another one"
    assert first.usage is not None
    assert second.usage is not None
    # The fake provider counts the words of every message it was sent: the first turn's input
    # and answer came along (its instructions did not: OpenAI does not carry them over).
    words = len(f"Name a colour {first.output_text} And another one".split())
    assert second.usage.input_tokens == words
    assert retrieved.to_dict() == second.to_dict()
    assert retrieved.previous_response_id == first.id
    assert gone.value.status_code == 404


def test_stored_responses_are_their_tenants_own(
    stack: Stack, gateway_url: str, sdk: openai.OpenAI
) -> None:
    secret = create_key(stack, tenant=f"{TENANT}-other", user="pytest", name="other").secret
    other = openai.OpenAI(base_url=gateway_url, api_key=secret, max_retries=0)
    with sdk, other:
        created = sdk.responses.create(model=MODEL, input="Mine")
        with pytest.raises(openai.NotFoundError) as retrieving:
            other.responses.retrieve(created.id)
        with pytest.raises(openai.NotFoundError):
            other.responses.delete(created.id)
        with pytest.raises(openai.NotFoundError) as continuing:
            other.responses.create(model=MODEL, input="Yours?", previous_response_id=created.id)
        kept = sdk.responses.retrieve(created.id)
    assert retrieving.value.status_code == 404
    assert continuing.value.param == "previous_response_id"
    assert kept.id == created.id


def test_store_false_cannot_be_continued(sdk: openai.OpenAI) -> None:
    with sdk:
        created = sdk.responses.create(model=MODEL, input="Forget me", store=False)
        with pytest.raises(openai.NotFoundError) as raised:
            sdk.responses.create(model=MODEL, input="Next", previous_response_id=created.id)
    assert created.to_dict()["store"] is False
    assert raised.value.param == "previous_response_id"


def test_unknown_model_raises_not_found(sdk: openai.OpenAI) -> None:
    with sdk, pytest.raises(openai.NotFoundError) as raised:
        sdk.responses.create(model="no-such-model", input="Hi")
    assert raised.value.code == "model_not_found"
