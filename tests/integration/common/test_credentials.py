"""A bearer channel presents its token on every kind of call a service makes to another."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from llmproxy.common.credentials import bearer_channel
from llmproxy.common.grpc_types import Context

SERVICE = "test.Echo"


def authorization(context: Context) -> bytes:
    values = [v for k, v in context.invocation_metadata() or () if k == "authorization"]
    return ",".join(str(v) for v in values).encode()


async def unary(request: bytes, context: Context) -> bytes:
    return authorization(context)


async def stream(request: bytes, context: Context) -> AsyncIterator[bytes]:
    yield authorization(context)


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    """A server whose methods answer with the authorization metadata they received."""
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                SERVICE,
                {
                    "Unary": grpc.unary_unary_rpc_method_handler(unary),
                    "Stream": grpc.unary_stream_rpc_method_handler(stream),
                },
            )
        ]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield port
    finally:
        await server.stop(None)


async def test_unary_and_streaming_calls_present_the_token(echo_port: int) -> None:
    async with bearer_channel(f"127.0.0.1:{echo_port}", "t0ken") as channel:
        assert await channel.unary_unary(f"/{SERVICE}/Unary")(b"", timeout=5) == b"Bearer t0ken"
        replies = [r async for r in channel.unary_stream(f"/{SERVICE}/Stream")(b"", timeout=5)]
    assert replies == [b"Bearer t0ken"]
