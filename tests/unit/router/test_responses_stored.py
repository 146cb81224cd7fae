"""Stored responses through the servicer, with the official openai SDK as the client:
previous_response_id, retrieve, delete, owner scoping, expiry, and a store that is down."""

from __future__ import annotations

import json
from typing import Any

import httpx2
import openai
import pytest

from llmproxy._gen.router.v1 import openai_pb2
from llmproxy.common.contract import KEY_ID_HEADER, STATUS_HEADER, TENANT_HEADER
from llmproxy.router.apis.responses_storage import STORE_ERRORS
from llmproxy.router.providers import sse
from llmproxy.router.service import OpenAIServicer
from llmproxy.router.settings import ModelSettings, ModelTarget, RouterSettings
from tests.unit.router.fakes import FakeClient, MemoryCache, MemoryResponseStore, answer

MODEL = ModelSettings(name="m", targets=[ModelTarget(provider="p", model="up")])


class Context:
    def __init__(self, tenant: str) -> None:
        self.metadata: dict[str, str] = {}
        self._incoming = ((TENANT_HEADER, tenant), (KEY_ID_HEADER, f"key-{tenant}"))

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._incoming

    async def send_initial_metadata(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.metadata.update(metadata)


class Gateway:
    """The servicer behind AsyncOpenAI clients, one per tenant; requests go to its RPCs."""

    def __init__(self, script: list[Any] | None = None, **settings: Any) -> None:
        self.provider = FakeClient("p", script)
        self.store = MemoryResponseStore()
        self.servicer = OpenAIServicer(
            [MODEL],
            {"p": self.provider},
            RouterSettings(**settings),
            cache=MemoryCache(),
            responses=self.store,
        )

    async def _call(self, request: httpx2.Request, context: Context) -> list[Any]:
        path = request.url.path
        if request.method == "POST":
            body = openai_pb2.CreateResponseRequest(body={"data": await request.aread()})
            return [r async for r in self.servicer.CreateResponse(body, context)]  # type: ignore[arg-type]
        response_id = path.rsplit("/", 1)[1]
        if request.method == "GET":
            get = openai_pb2.GetResponseRequest(response_id=response_id)
            return [await self.servicer.GetResponse(get, context)]  # type: ignore[arg-type]
        delete = openai_pb2.DeleteResponseRequest(response_id=response_id)
        return [await self.servicer.DeleteResponse(delete, context)]  # type: ignore[arg-type]

    def sdk(self, tenant: str = "acme") -> openai.AsyncOpenAI:
        async def send(request: httpx2.Request) -> httpx2.Response:
            context = Context(tenant)
            replies = await self._call(request, context)
            status = int(context.metadata.pop(STATUS_HEADER, "200"))
            data = b"".join(r.data for r in replies)
            headers = {"content-type": replies[0].content_type, **context.metadata}
            return httpx2.Response(status, content=data, headers=headers)

        return openai.AsyncOpenAI(
            base_url="http://gateway.invalid/v1",
            api_key="sk-test",
            max_retries=0,
            _strict_response_validation=True,
            http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(send)),
        )


def tool_call_answer() -> bytes:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    message = {"role": "assistant", "content": None, "tool_calls": [call]}
    return json.dumps(
        {"object": "chat.completion", "choices": [{"index": 0, "message": message}]}
    ).encode()


async def test_a_follow_up_sees_the_stored_conversation_without_old_instructions() -> None:
    gateway = Gateway([answer("Paris"), answer("2 million")])
    async with gateway.sdk() as client:
        first = await client.responses.create(
            model="m", input="Capital of France?", instructions="Be brief."
        )
        second = await client.responses.create(
            model="m",
            input="Its population?",
            instructions="Answer in numbers.",
            previous_response_id=first.id,
        )
    assert first.to_dict()["store"] is True
    assert second.previous_response_id == first.id
    assert second.output_text == "2 million"
    assert gateway.provider.calls[1]["messages"] == [
        {"role": "system", "content": "Answer in numbers."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris"},
        {"role": "user", "content": "Its population?"},
    ]
    stored, _ = gateway.store.entries[second.id]
    assert stored.tenant == "acme"
    assert stored.key_id == "key-acme"
    assert stored.model == "m"
    assert stored.messages == [
        *gateway.provider.calls[1]["messages"][1:],
        {"role": "assistant", "content": "2 million"},
    ]
    assert gateway.store.ttls == [30 * 24 * 3600] * 2


async def test_function_calls_are_kept_for_the_turn_that_answers_them() -> None:
    gateway = Gateway([tool_call_answer(), answer("sunny")])
    async with gateway.sdk() as client:
        first = await client.responses.create(model="m", input="Weather?")
        await client.responses.create(
            model="m",
            previous_response_id=first.id,
            input=[{"type": "function_call_output", "call_id": "call_1", "output": "sun"}],
        )
    assert gateway.provider.calls[1]["messages"][1:] == [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sun"},
    ]


async def test_a_streamed_answer_is_stored_as_it_completed() -> None:
    events = [sse.encode({"choices": [{"index": 0, "delta": {"content": w}}]}) for w in ("a", "b")]
    gateway = Gateway([[*events, sse.DONE]])
    async with gateway.sdk() as client:
        stream = await client.responses.create(model="m", input="Hi", stream=True)
        done = [e async for e in stream][-1]
        retrieved = await client.responses.retrieve(done.response.id)  # type: ignore[union-attr]
    assert retrieved.status == "completed"
    assert retrieved.output_text == "ab"
    assert gateway.store.entries[retrieved.id][0].messages[-1] == {
        "role": "assistant",
        "content": "ab",
    }


async def test_retrieve_and_delete_are_the_owner_tenants_only() -> None:
    gateway = Gateway()
    async with gateway.sdk("acme") as owner, gateway.sdk("other") as other:
        created = await owner.responses.create(model="m", input="Hi")
        assert (await owner.responses.retrieve(created.id)).to_dict() == created.to_dict()
        with pytest.raises(openai.NotFoundError):
            await other.responses.retrieve(created.id)
        with pytest.raises(openai.NotFoundError):
            await other.responses.delete(created.id)
        with pytest.raises(openai.NotFoundError):
            await other.responses.create(model="m", input="Hi", previous_response_id=created.id)
        await owner.responses.delete(created.id)
        with pytest.raises(openai.NotFoundError) as raised:
            await owner.responses.retrieve(created.id)
        with pytest.raises(openai.NotFoundError):
            await owner.responses.delete(created.id)
    assert raised.value.body["type"] == "invalid_request_error"  # type: ignore[index]


async def test_store_false_is_not_stored_and_cannot_be_continued() -> None:
    gateway = Gateway()
    async with gateway.sdk() as client:
        created = await client.responses.create(model="m", input="Hi", store=False)
        with pytest.raises(openai.NotFoundError) as raised:
            await client.responses.create(model="m", input="Hi", previous_response_id=created.id)
    assert created.to_dict()["store"] is False
    assert gateway.store.entries == {}
    assert raised.value.body["param"] == "previous_response_id"  # type: ignore[index]
    assert len(gateway.provider.calls) == 1  # the refused follow-up reached no provider


async def test_an_expired_response_is_not_found() -> None:
    gateway = Gateway(responses={"store_ttl_s": 60})
    async with gateway.sdk() as client:
        created = await client.responses.create(model="m", input="Hi")
        gateway.store.now += 61
        with pytest.raises(openai.NotFoundError):
            await client.responses.create(model="m", input="Hi", previous_response_id=created.id)
    assert gateway.store.ttls == [60]


async def test_a_store_that_is_down_fails_only_requests_that_need_it() -> None:
    gateway = Gateway()
    gateway.store.down = True
    before = STORE_ERRORS._value.get()
    async with gateway.sdk() as client:
        created = await client.responses.create(model="m", input="Hi")  # answered, not stored
        with pytest.raises(openai.InternalServerError) as follow_up:
            await client.responses.create(model="m", input="Hi", previous_response_id="resp_1")
        with pytest.raises(openai.InternalServerError) as retrieval:
            await client.responses.retrieve(created.id)
    assert follow_up.value.status_code == retrieval.value.status_code == 503
    assert follow_up.value.body["code"] == "store_unavailable"  # type: ignore[index]
    assert created.output_text == "ok"
    assert STORE_ERRORS._value.get() == before + 1


async def test_a_gateway_that_does_not_store_says_so() -> None:
    gateway = Gateway(responses={"store": False})
    async with gateway.sdk() as client:
        created = await client.responses.create(model="m", input="Hi", store=True)
        with pytest.raises(openai.BadRequestError) as raised:
            await client.responses.create(model="m", input="Hi", previous_response_id="resp_1")
        with pytest.raises(openai.NotFoundError):
            await client.responses.retrieve(created.id)
    assert created.to_dict()["store"] is False
    assert gateway.store.entries == {}
    assert "does not store responses" in raised.value.message


async def test_a_cached_answer_is_stored_under_its_own_id_with_the_history_in_the_key() -> None:
    gateway = Gateway([answer("one"), answer("two"), answer("three")])
    async with gateway.sdk() as client:
        first = await client.responses.create(model="m", input="Hi", temperature=0)
        again = await client.responses.create(model="m", input="Hi", temperature=0)  # cached
        after_first = await client.responses.create(
            model="m", input="Next", temperature=0, previous_response_id=first.id
        )
        after_again = await client.responses.create(
            model="m", input="Next", temperature=0, previous_response_id=again.id
        )
        fresh = await client.responses.create(model="m", input="Next", temperature=0)
    assert again.id != first.id
    assert again.output_text == "one"
    assert again.id in gateway.store.entries
    # The same history is the same chat body: one cache entry; without it, another.
    assert after_again.output_text == after_first.output_text == "two"
    assert fresh.output_text == "three"
    assert len(gateway.provider.calls) == 3
