"""The floor of a router hop: a bare grpc.aio handler making the same provider call.

Same runtime as the router (grpc.aio on uvloop, aiohttp's pool under the provider call), no
work of its own: CreateChatCompletion POSTs the body to the provider URL and answers its bytes
as one HttpBody, after sending initial metadata as the router does. What the router costs
above this is its own (validation, cache, failover, accounting); what this costs is the floor
of any Python gRPC hop that calls a provider on this machine.

    python bench/router_floor_server.py PORT PROVIDER_URL
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import grpc
import uvloop
from google.api import httpbody_pb2

from llmproxy._gen.router.v1 import openai_pb2

SERVICE = "llmproxy.router.v1.OpenAIService"
METADATA = (("x-cache", "BYPASS"),)


async def main(port: int, url: str) -> None:
    """Serve on 127.0.0.1:port until killed."""
    session = aiohttp.ClientSession()
    headers = {"content-type": "application/json"}

    async def chat(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        async with session.post(url, data=request.body.data, headers=headers) as response:
            data = await response.read()
        await context.send_initial_metadata(METADATA)
        yield httpbody_pb2.HttpBody(content_type="application/json", data=data)

    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "CreateChatCompletion": grpc.unary_stream_rpc_method_handler(
                chat,
                request_deserializer=openai_pb2.CreateChatCompletionRequest.FromString,
                response_serializer=httpbody_pb2.HttpBody.SerializeToString,
            )
        },
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([handler])
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]), sys.argv[2]))
