"""Wires the router: provider clients, servicers, the gRPC server."""

from __future__ import annotations

import os

import grpc
import httpx

from llmproxy._gen.router.v1 import openai_pb2, openai_pb2_grpc, router_pb2, router_pb2_grpc
from llmproxy.common.server import RunningServer, start_server
from llmproxy.config import StackConfig
from llmproxy.router.providers import Provider, ProviderClient
from llmproxy.router.service import OpenAIServicer, RouterControlServicer

SERVICE_NAMES = (
    openai_pb2.DESCRIPTOR.services_by_name["OpenAIService"].full_name,
    router_pb2.DESCRIPTOR.services_by_name["RouterService"].full_name,
)


def new_http_client() -> httpx.AsyncClient:
    """The one pooled client every provider call goes through."""
    return httpx.AsyncClient(
        limits=httpx.Limits(max_connections=1000, max_keepalive_connections=200),
        timeout=httpx.Timeout(60.0, connect=5.0),
        # Requests never pick where they go: no redirects, no proxies from the environment.
        follow_redirects=False,
        trust_env=False,
    )


async def serve(config: StackConfig, http: httpx.AsyncClient | None = None) -> RunningServer:
    """Start the router's gRPC server for config; returns the running server and its port."""
    environ = os.environ
    http = http or new_http_client()
    clients = {
        p.name: ProviderClient(http, Provider.from_settings(p, environ))
        for p in config.provider_endpoints(environ)
    }
    routes = config.routing_table(environ)
    openai_api = OpenAIServicer(routes, clients)
    control = RouterControlServicer(routes)

    def register(server: grpc.aio.Server) -> tuple[str, ...]:
        openai_pb2_grpc.add_OpenAIServiceServicer_to_server(openai_api, server)
        router_pb2_grpc.add_RouterServiceServicer_to_server(control, server)
        return SERVICE_NAMES

    return await start_server(config.services.router, register)
