"""A no-op ShouldRateLimit server: the ceiling of any Python gRPC service on this machine.

Same runtime as the rate limit service (grpc.aio on uvloop), no work at all: every call
answers OK. `python bench/noop_server.py PORT`
"""

from __future__ import annotations

import sys
from typing import Any

import grpc
import uvloop
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

OK = rls_pb2.RateLimitResponse.OK


class NoopServicer(rls_pb2_grpc.RateLimitServiceServicer):  # type: ignore[misc]
    """Answers every request OK without looking at it."""

    async def ShouldRateLimit(self, request: Any, context: Any) -> Any:
        """OK."""
        return rls_pb2.RateLimitResponse(overall_code=OK)


async def main(port: int) -> None:
    """Serve on 127.0.0.1:port until killed."""
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    rls_pb2_grpc.add_RateLimitServiceServicer_to_server(NoopServicer(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1])))
