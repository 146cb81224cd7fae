"""Wires the authorization service."""

from __future__ import annotations

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

from llmproxy._gen.authz.v1 import authz_pb2, authz_pb2_grpc
from llmproxy.authz.service import AuthorizationServicer, AuthzControlServicer
from llmproxy.common.server import RunningServer, start_server
from llmproxy.config import StackConfig

SERVICE_NAMES = (
    external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"].full_name,
    authz_pb2.DESCRIPTOR.services_by_name["AuthzService"].full_name,
)


async def serve(config: StackConfig) -> RunningServer:
    """Start the authorization gRPC server."""

    def register(server: grpc.aio.Server) -> tuple[str, ...]:
        external_auth_pb2_grpc.add_AuthorizationServicer_to_server(AuthorizationServicer(), server)
        authz_pb2_grpc.add_AuthzServiceServicer_to_server(AuthzControlServicer(), server)
        return SERVICE_NAMES

    return await start_server(config.services.authz, register)
