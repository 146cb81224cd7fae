"""The fault control API. Experiments come with a later issue; none exist yet."""

from __future__ import annotations

import grpc

from llmproxy._gen.fault.v1 import fault_pb2, fault_pb2_grpc


class FaultServicer(fault_pb2_grpc.FaultServiceServicer):
    """Lists chaos experiments."""

    async def ListExperiments(  # noqa: N802 - the gRPC method name
        self, request: fault_pb2.ListExperimentsRequest, context: grpc.aio.ServicerContext
    ) -> fault_pb2.ListExperimentsResponse:
        """List the known experiments: there are none until experiments can be created."""
        return fault_pb2.ListExperimentsResponse()
