"""Authz services on real Redis: a factory of in-process servers, stopped after the test."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack

import pytest
import redis.asyncio as aioredis
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

from llmproxy._gen.authz.v1 import authz_pb2_grpc
from llmproxy.authz.server import serve
from llmproxy.config import DEFAULT_CONFIG, load_config
from tests.harness.services import Served, served
from tests.unit.authz.test_requests import check_request

TOKEN = secrets.token_urlsafe(24)
ADMIN = (("authorization", f"Bearer {TOKEN}"),)
ENVIRON = {"LLMPROXY_AUTHZ_HMAC_SECRET": "h" * 40, "LLMPROXY_ADMIN_TOKEN": TOKEN}


class Instance:
    """One running authz service and stubs for both of its APIs."""

    def __init__(self, service: Served) -> None:
        self.running = service.running
        self.channel = service.channel
        self.admin = authz_pb2_grpc.AuthzServiceStub(self.channel)
        self.authorization = external_auth_pb2_grpc.AuthorizationStub(self.channel)

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
    """Starts authz instances on the session's Redis (flushed); options are env overrides."""
    async with AsyncExitStack() as stack:

        async def start(**overrides: str) -> Instance:
            environ = {
                "LLMPROXY__REDIS__URL": redis_process,
                "LLMPROXY__SERVICES__AUTHZ__GRPC_PORT": "0",
                **{f"LLMPROXY__SERVICES__AUTHZ__{k.upper()}": v for k, v in overrides.items()},
            }
            config = load_config(DEFAULT_CONFIG, environ)
            return Instance(await stack.enter_async_context(served(serve(config, ENVIRON))))

        yield start
