"""The typed gRPC ChatService: same models, cache and failover, gRPC status codes for errors."""

from __future__ import annotations

import grpc
import pytest

from llmproxy._gen.router.v1 import chat_pb2, chat_pb2_grpc
from tests.integration.router.conftest import Router

HELLO = [chat_pb2.ChatMessage(role="user", content="Hello typed")]


def stub(router: Router) -> chat_pb2_grpc.ChatServiceStub:
    return chat_pb2_grpc.ChatServiceStub(router.channel)


async def test_chat_returns_a_typed_completion_and_caches(router: Router) -> None:
    request = chat_pb2.ChatRequest(model="gpt", messages=HELLO, temperature=0)
    first = await stub(router).Chat(request)
    call = stub(router).Chat(request)
    second = await call
    assert first.content == "This is a fake answer to: Hello typed"
    assert first.finish_reason == "stop"
    assert first.usage.total_tokens == first.usage.prompt_tokens + first.usage.completion_tokens
    assert second == first
    assert dict(await call.initial_metadata())["x-cache"] == "HIT"


async def test_stream_chat_yields_deltas_and_usage(router: Router) -> None:
    request = chat_pb2.StreamChatRequest(
        chat=chat_pb2.ChatRequest(model="claude", messages=HELLO), include_usage=True
    )
    pieces = [piece async for piece in stub(router).StreamChat(request)]
    assert "".join(p.delta for p in pieces) == "This is a fake answer to: Hello typed"
    assert any(p.finish_reason == "stop" for p in pieces)
    assert pieces[-1].usage.completion_tokens > 0


async def test_embed_returns_one_vector_per_input(router: Router) -> None:
    reply = await stub(router).Embed(chat_pb2.EmbedRequest(model="embed", input=["a", "b"]))
    assert [e.index for e in reply.embeddings] == [0, 1]
    assert len(reply.embeddings[0].values) == 8


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        (chat_pb2.ChatRequest(model="nope", messages=HELLO), grpc.StatusCode.NOT_FOUND),
        (chat_pb2.ChatRequest(model="gpt"), grpc.StatusCode.INVALID_ARGUMENT),
        (
            chat_pb2.ChatRequest(model="gpt", messages=HELLO, temperature=3),
            grpc.StatusCode.INVALID_ARGUMENT,
        ),
    ],
)
async def test_errors_are_grpc_status_codes(
    router: Router, request_: chat_pb2.ChatRequest, code: grpc.StatusCode
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub(router).Chat(request_)
    assert raised.value.code() == code
    assert raised.value.details()


async def test_provider_outage_is_unavailable(router: Router) -> None:
    router.provider.knobs.outage = "503"
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub(router).Chat(chat_pb2.ChatRequest(model="gpt", messages=HELLO))
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in stub(router).StreamChat(
            chat_pb2.StreamChatRequest(chat=chat_pb2.ChatRequest(model="gpt", messages=HELLO))
        ):
            pass
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
