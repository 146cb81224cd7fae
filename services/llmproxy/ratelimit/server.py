"""Wires the rate limit service."""

from __future__ import annotations

import grpc
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from llmproxy._gen.ratelimit.v1 import ratelimit_pb2, ratelimit_pb2_grpc
from llmproxy.common.server import RunningServer, start_server
from llmproxy.config import StackConfig
from llmproxy.ratelimit.service import RateLimitControlServicer, RateLimitServicer

SERVICE_NAMES = (
    rls_pb2.DESCRIPTOR.services_by_name["RateLimitService"].full_name,
    ratelimit_pb2.DESCRIPTOR.services_by_name["RateLimitControlService"].full_name,
)


async def serve(config: StackConfig) -> RunningServer:
    """Start the rate limit gRPC server."""
    settings = config.services.ratelimit

    def register(server: grpc.aio.Server) -> tuple[str, ...]:
        rls_pb2_grpc.add_RateLimitServiceServicer_to_server(RateLimitServicer(), server)
        ratelimit_pb2_grpc.add_RateLimitControlServiceServicer_to_server(
            RateLimitControlServicer(settings.domain), server
        )
        return SERVICE_NAMES

    return await start_server(settings, register)
