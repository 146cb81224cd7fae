"""What an end-to-end client needs: the gateway's URL and an API key it accepts."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from llmproxy._gen.authz.v1 import authz_pb2, authz_pb2_grpc
from llmproxy.devstack.stack import Stack
from tests.harness import logs
from tests.harness.configs import stack_config_data, write_config


def admin_metadata(stack: Stack) -> tuple[tuple[str, str], ...]:
    """The gRPC metadata of an admin call on stack's authz service."""
    token = stack.environ[stack.config.control.admin_token_env]
    return (("authorization", f"Bearer {token}"),)


def create_key(stack: Stack, **fields: object) -> authz_pb2.CreateKeyResponse:
    """Create an API key through the admin API on Envoy's control listener."""
    envoy = stack.config.envoy
    with grpc.insecure_channel(f"{envoy.host}:{envoy.control_port}") as channel:
        reply: authz_pb2.CreateKeyResponse = authz_pb2_grpc.AuthzServiceStub(channel).CreateKey(
            authz_pb2.CreateKeyRequest(**fields),  # type: ignore[arg-type]
            metadata=admin_metadata(stack),
            timeout=10,
        )
    return reply


@pytest.fixture
def own_stack_data() -> dict[str, Any]:
    """The configuration own_stack starts with; a module overrides it to change the stack."""
    return stack_config_data()


@pytest.fixture
async def own_stack(
    request: pytest.FixtureRequest, tmp_path: Path, own_stack_data: dict[str, Any]
) -> AsyncIterator[Stack]:
    """A whole stack of the test's own, for a test that stops or kills part of it.

    Its configuration is own_stack_data; parametrized indirectly, the parameter is a dict of
    overrides merged into that (a section's keys into the section, like stack_config_data).
    """
    data = dict(own_stack_data)
    for key, value in getattr(request, "param", {}).items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    path, config = write_config(tmp_path, data)
    stack = Stack(config, path, tmp_path / "run", os.environ)
    await stack.start()
    logs.watch(request.node, *stack.processes.values())
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def client_api_key(stack: Stack) -> str:
    """A real API key (tenant e2e, every model, no budget) created through the admin API."""
    return create_key(stack, tenant="e2e", user="pytest", name="e2e client").secret


@pytest.fixture
def gateway_url(stack_logs: Stack) -> str:
    """The OpenAI base URL through Envoy, e.g. http://127.0.0.1:8080/v1."""
    envoy = stack_logs.config.envoy
    return f"http://{envoy.host}:{envoy.listener_port}/v1"


@pytest.fixture
def auth_headers(client_api_key: str) -> dict[str, str]:
    """The headers the OpenAI SDK sends for client_api_key."""
    return {"authorization": f"Bearer {client_api_key}"}
