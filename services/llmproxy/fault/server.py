"""Wires the fault service."""

from __future__ import annotations

import grpc

from llmproxy._gen.fault.v1 import fault_pb2, fault_pb2_grpc
from llmproxy.common.server import RunningServer, start_server
from llmproxy.config import StackConfig
from llmproxy.fault.service import FaultServicer

SERVICE_NAMES = (fault_pb2.DESCRIPTOR.services_by_name["FaultService"].full_name,)


async def serve(config: StackConfig) -> RunningServer:
    """Start the fault gRPC server."""

    def register(server: grpc.aio.Server) -> tuple[str, ...]:
        fault_pb2_grpc.add_FaultServiceServicer_to_server(FaultServicer(), server)
        return SERVICE_NAMES

    return await start_server(config.services.fault, register)
