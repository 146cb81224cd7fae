"""Bare stand-ins for the three Python hops of a request: the floor of the gateway's design.

Same runtime as the services (grpc.aio on uvloop, gRPC health for Envoy's checks), no work of
their own:
- authz: Check allows every request with a fixed set of identity headers;
- ratelimit: ShouldRateLimit answers OK whatever the request;
- router: CreateChatCompletion POSTs the body to the provider URL (through Envoy's egress, as
  the router does) and relays its answer, streamed chunk by chunk when the request streams.

What the real services cost above these is their own work; what these cost is the floor of
any Python gRPC hop on this machine. `bench_router` measures a gateway made of them.

    python -m bench.floor_servers authz|ratelimit PORT
    python -m bench.floor_servers router PORT PROVIDER_URL
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import grpc
import uvloop
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2
from envoy.service.ratelimit.v3 import rls_pb2
from google.api import httpbody_pb2
from google.rpc import code_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from llmproxy._gen.router.v1 import openai_pb2
from llmproxy.common.contract import (
    FAULT_CLUSTER_HEADER,
    KEY_ID_HEADER,
    TENANT_HEADER,
    TIER_HEADER,
    USER_HEADER,
    fault_cluster,
)

Handlers = Callable[[list[str]], grpc.GenericRpcHandler]
ROUTER_METADATA = (("x-cache", "BYPASS"),)


def _header(name: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=name, value=value))


def _constant(service: str, method: str, request_type: Any, answer: Any) -> grpc.GenericRpcHandler:
    """A unary method that answers every request with answer (the request is still decoded,
    as a real service's would be)."""

    async def handle(request: Any, context: Any) -> Any:
        return answer

    return grpc.method_handlers_generic_handler(
        service,
        {
            method: grpc.unary_unary_rpc_method_handler(
                handle,
                request_deserializer=request_type.FromString,
                response_serializer=type(answer).SerializeToString,
            )
        },
    )


def authz(_: list[str]) -> grpc.GenericRpcHandler:
    """ext_authz Check: allowed, naming a fixed caller as the real service would."""
    identity = {
        TENANT_HEADER: "bench",
        USER_HEADER: "bench",
        KEY_ID_HEADER: "bench",
        TIER_HEADER: "default",
        FAULT_CLUSTER_HEADER: fault_cluster("bench"),
    }
    answer = external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=code_pb2.OK),
        ok_response=external_auth_pb2.OkHttpResponse(
            headers=[_header(name, value) for name, value in identity.items()]
        ),
    )
    return _constant(
        "envoy.service.auth.v3.Authorization", "Check", external_auth_pb2.CheckRequest, answer
    )


def ratelimit(_: list[str]) -> grpc.GenericRpcHandler:
    """ShouldRateLimit: OK, whatever the request (the rate limit service's own no-op)."""
    answer = rls_pb2.RateLimitResponse(overall_code=rls_pb2.RateLimitResponse.OK)
    return _constant(
        "envoy.service.ratelimit.v3.RateLimitService",
        "ShouldRateLimit",
        rls_pb2.RateLimitRequest,
        answer,
    )


def router(args: list[str]) -> grpc.GenericRpcHandler:
    """CreateChatCompletion: the provider's answer relayed, chunk by chunk when streamed."""
    url = args[0]
    session: aiohttp.ClientSession | None = None
    headers = {"content-type": "application/json"}

    async def chat(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        nonlocal session
        session = session or aiohttp.ClientSession()
        body = request.body.data
        stream = bool(json.loads(body).get("stream"))
        async with session.post(url, data=body, headers=headers) as response:
            if not stream:
                data = await response.read()
                await context.send_initial_metadata(ROUTER_METADATA)
                yield httpbody_pb2.HttpBody(content_type="application/json", data=data)
                return
            await context.send_initial_metadata(ROUTER_METADATA)
            async for chunk in response.content.iter_any():
                yield httpbody_pb2.HttpBody(content_type="text/event-stream", data=chunk)

    return grpc.method_handlers_generic_handler(
        "llmproxy.router.v1.OpenAIService",
        {
            "CreateChatCompletion": grpc.unary_stream_rpc_method_handler(
                chat,
                request_deserializer=openai_pb2.CreateChatCompletionRequest.FromString,
                response_serializer=httpbody_pb2.HttpBody.SerializeToString,
            )
        },
    )


ROLES: dict[str, Handlers] = {"authz": authz, "ratelimit": ratelimit, "router": router}


async def main(role: str, port: int, args: list[str]) -> None:
    """Serve the role's method and gRPC health on 127.0.0.1:port until killed."""
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([ROLES[role](args)])
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    await server.wait_for_termination()


if __name__ == "__main__":
    uvloop.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3:]))
