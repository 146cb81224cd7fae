"""A gRPC client of the typed ChatService through Envoy's client listener."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from llmproxy._gen.router.v1 import chat_pb2, chat_pb2_grpc
from llmproxy.devstack.stack import Stack


@pytest.fixture
async def chat(stack_logs: Stack) -> AsyncIterator[chat_pb2_grpc.ChatServiceStub]:
    envoy = stack_logs.config.envoy
    async with grpc.aio.insecure_channel(f"{envoy.host}:{envoy.listener_port}") as channel:
        yield chat_pb2_grpc.ChatServiceStub(channel)


async def test_typed_chat_through_envoy(
    chat: chat_pb2_grpc.ChatServiceStub, client_api_key: str
) -> None:
    reply = await chat.Chat(
        chat_pb2.ChatRequest(
            model="gpt-4o-mini", messages=[chat_pb2.ChatMessage(role="user", content="typed")]
        ),
        metadata=(("authorization", f"Bearer {client_api_key}"),),
    )
    assert reply.content == "This is a fake answer to: typed"


async def test_typed_chat_without_a_key_is_refused(chat: chat_pb2_grpc.ChatServiceStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await chat.Chat(
            chat_pb2.ChatRequest(
                model="gpt-4o-mini", messages=[chat_pb2.ChatMessage(role="user", content="x")]
            )
        )
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
