"""The rate limit servicers: Envoy's ShouldRateLimit and the control API.

No limits are configured yet (a later issue brings them), so every descriptor is under limit.
"""

from __future__ import annotations

from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from llmproxy._gen.ratelimit.v1 import ratelimit_pb2, ratelimit_pb2_grpc
from llmproxy.common.grpc_types import Context

OK = rls_pb2.RateLimitResponse.OK


class RateLimitServicer(rls_pb2_grpc.RateLimitServiceServicer):
    """Envoy's rate limit decision: every descriptor is allowed while no limit is configured."""

    async def ShouldRateLimit(
        self, request: rls_pb2.RateLimitRequest, context: Context
    ) -> rls_pb2.RateLimitResponse:
        """Answer OK overall and for each descriptor, in the order Envoy sent them."""
        return rls_pb2.RateLimitResponse(
            overall_code=OK,
            statuses=[
                rls_pb2.RateLimitResponse.DescriptorStatus(code=OK) for _ in request.descriptors
            ],
        )


class RateLimitControlServicer(ratelimit_pb2_grpc.RateLimitControlServiceServicer):
    """The rate limiter's control API for operators."""

    def __init__(self, domain: str) -> None:
        self._domain = domain

    async def GetLimits(
        self, request: ratelimit_pb2.GetLimitsRequest, context: Context
    ) -> ratelimit_pb2.GetLimitsResponse:
        """Report the limits in force: none yet."""
        return ratelimit_pb2.GetLimitsResponse(domain=self._domain)
