"""Authz services on real Redis: a factory of in-process servers, stopped after the test.

tests/conftest.py puts the session's HMAC secret, bootstrap admin token and service token in
the environment; every instance reads them there. `Instance.admin` presents the bootstrap admin
token (the harness's channel does); `Instance.as_caller` presents whatever the test says.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack

import grpc
import pytest
import redis.asyncio as aioredis
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

from llmproxy._gen.authz.v1 import authz_pb2_grpc
from llmproxy.authz.server import serve
from llmproxy.common.credentials import bearer_channel
from llmproxy.common.settings import ControlSettings
from llmproxy.config import DEFAULT_CONFIG, load_config
from tests.harness.services import Served, served
from tests.unit.authz.test_requests import check_request

CONTROL = ControlSettings()


def admin_token() -> str:
    """The session's bootstrap admin token (set once tests/conftest.py has configured pytest)."""
    return os.environ[CONTROL.admin_token_env]


def service_token() -> str:
    """The session's service token."""
    return os.environ[CONTROL.service_token_env]


class Instance:
    """One running authz service and stubs for both of its APIs."""

    def __init__(self, service: Served, stack: AsyncExitStack) -> None:
        self.running = service.running
        self.channel = service.channel
        self.admin = authz_pb2_grpc.AuthzServiceStub(self.channel)
        self.authorization = external_auth_pb2_grpc.AuthorizationStub(self.channel)
        self._stack = stack

    @property
    def target(self) -> str:
        """host:port of the service."""
        return f"127.0.0.1:{self.running.port}"

    async def as_caller(self, token: str | None) -> authz_pb2_grpc.AuthzServiceStub:
        """A stub whose calls present token (no credential at all for None)."""
        channel = (
            grpc.aio.insecure_channel(self.target)
            if token is None
            else bearer_channel(self.target, token)
        )
        await self._stack.enter_async_context(channel)
        return authz_pb2_grpc.AuthzServiceStub(channel)

    async def check(
        self, key: str | None, body: bytes = b'{"model": "gpt-4o-mini", "messages": []}'
    ) -> external_auth_pb2.CheckResponse:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        reply: external_auth_pb2.CheckResponse = await self.authorization.Check(
            check_request(headers, body), timeout=5
        )
        return reply


StartAuthz = Callable[..., Awaitable[Instance]]


@pytest.fixture
async def start_authz(
    redis_process: str, redis_client: aioredis.Redis
) -> AsyncIterator[StartAuthz]:
    """Starts authz instances on the session's Redis (flushed); options are env overrides of
    services.authz (`control_<name>=` overrides control.<name>)."""
    async with AsyncExitStack() as stack:

        async def start(**overrides: str) -> Instance:
            environ = {
                "LLMPROXY__REDIS__URL": redis_process,
                "LLMPROXY__SERVICES__AUTHZ__GRPC_PORT": "0",
            }
            for name, value in overrides.items():
                section, _, field = name.partition("_")
                if section == "control":
                    environ[f"LLMPROXY__CONTROL__{field.upper()}"] = value
                else:
                    environ[f"LLMPROXY__SERVICES__AUTHZ__{name.upper()}"] = value
            config = load_config(DEFAULT_CONFIG, environ)
            service = await stack.enter_async_context(served(serve(config)))
            return Instance(service, stack)

        yield start
