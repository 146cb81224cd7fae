"""Wires the provider health service."""

from __future__ import annotations

import os

import grpc

from llmproxy._gen.health.v1 import health_pb2, health_pb2_grpc
from llmproxy.common.server import RunningServer, start_server
from llmproxy.config import StackConfig
from llmproxy.health.service import ProviderHealthServicer

SERVICE_NAMES = (health_pb2.DESCRIPTOR.services_by_name["ProviderHealthService"].full_name,)


async def serve(config: StackConfig) -> RunningServer:
    """Start the provider health gRPC server."""
    servicer = ProviderHealthServicer(config.provider_endpoints(os.environ))

    def register(server: grpc.aio.Server) -> tuple[str, ...]:
        health_pb2_grpc.add_ProviderHealthServiceServicer_to_server(servicer, server)
        return SERVICE_NAMES

    return await start_server(config.services.health, register)
