"""The fault control API. Experiments come with a later issue; none exist yet."""

from __future__ import annotations

from llmproxy._gen.fault.v1 import fault_pb2, fault_pb2_grpc
from llmproxy.common.grpc_types import Context


class FaultServicer(fault_pb2_grpc.FaultServiceServicer):
    """Lists chaos experiments."""

    async def ListExperiments(
        self, request: fault_pb2.ListExperimentsRequest, context: Context
    ) -> fault_pb2.ListExperimentsResponse:
        """List the known experiments: there are none until experiments can be created."""
        return fault_pb2.ListExperimentsResponse()
