"""A service started before authz answers control calls as soon as authz is up.

The services of a stack start together. Before authz listens, some channel of a service's
process may already have tried its address (health's component checks do); the service's
token checks must not be refused with UNAVAILABLE while grpc waits out that failed attempt.
"""

from __future__ import annotations

import os
from contextlib import AsyncExitStack
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llmproxy._gen.ratelimit.v1 import ratelimit_pb2
from llmproxy.authz.server import serve as serve_authz
from llmproxy.common.access import Role
from llmproxy.common.settings import ControlSettings
from llmproxy.ratelimit.server import serve as serve_ratelimit
from tests.harness.configs import stack_config_data, write_config
from tests.harness.control import call, create_control_token
from tests.harness.ports import free_port
from tests.harness.services import GRACE_S, served

GET_LIMITS = ratelimit_pb2.DESCRIPTOR.services_by_name["RateLimitControlService"].methods_by_name[
    "GetLimits"
]


async def test_a_token_is_checked_as_soon_as_authz_listens(
    tmp_path: Path, redis_process: str
) -> None:
    admin = os.environ[ControlSettings().admin_token_env]
    data = stack_config_data(redis={"url": redis_process})
    data["services"]["authz"]["grpc_port"] = free_port()
    data["services"]["ratelimit"]["grpc_port"] = 0
    _, config = write_config(tmp_path, data)
    authz_target = f"127.0.0.1:{config.services.authz.grpc_port}"
    async with AsyncExitStack() as stack:
        ratelimit = await stack.enter_async_context(served(serve_ratelimit(config)))
        # Another channel of this process tries authz before it listens, and fails.
        early = await stack.enter_async_context(grpc.aio.insecure_channel(authz_target))
        with pytest.raises(grpc.aio.AioRpcError):
            await health_pb2_grpc.HealthStub(early).Check(health_pb2.HealthCheckRequest())
        # Not `served`: its channel would wait out the failed attempt before yielding.
        authz = await serve_authz(config)
        stack.push_async_callback(authz.stop, GRACE_S)
        # A channel unaffected by the failed attempt, as a person's grpcurl would be.
        own = await stack.enter_async_context(
            grpc.aio.insecure_channel(authz_target, options=[("grpc.use_local_subchannel_pool", 1)])
        )
        viewer = await create_control_token(own, admin, Role.VIEWER, "late")
        bare = await stack.enter_async_context(
            grpc.aio.insecure_channel(f"127.0.0.1:{ratelimit.port}")
        )
        answer = await call(bare, GET_LIMITS, viewer.secret)
    assert answer.code == grpc.StatusCode.OK, answer
