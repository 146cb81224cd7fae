"""What reaches the router behind Envoy: identity headers from authz only, never the client's.

A real Envoy with the stack's generated config, its router cluster pointed at a small gRPC
echo server that answers each chat completion with the metadata it received; authz (and
ratelimit) are the session stack's real services.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from google.api import httpbody_pb2
from grpc_health.v1 import health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from llmproxy._gen.router.v1 import openai_pb2_grpc
from llmproxy.common.descriptors import descriptor_set
from llmproxy.common.grpc_types import Context
from llmproxy.devstack.binaries import find_binary
from llmproxy.devstack.probes import http_ok
from llmproxy.devstack.process import ManagedProcess
from llmproxy.devstack.stack import Stack
from llmproxy.envoyconf.build import build_bootstrap, write
from tests.harness import logs
from tests.harness.configs import stack_config_data, write_config
from tests.harness.ports import free_port

SPOOFED = {
    "x-llmproxy-tenant": "evil-corp",
    "x-llmproxy-user": "root",
    "x-llmproxy-key-id": "ffffffffffffffff",
    "x-llmproxy-tier": "unlimited",
    "x-llmproxy-model": "free-model",
    "x-llmproxy-token-estimate": "1",
}
BODY = {"model": "gpt-4o-mini", "max_tokens": 7, "messages": [{"role": "user", "content": "hi"}]}


class EchoRouter(openai_pb2_grpc.OpenAIServiceServicer):
    """Answers with the request metadata as a JSON body."""

    async def CreateChatCompletion(
        self, request: Any, context: Context
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        metadata = {key: str(value) for key, value in context.invocation_metadata() or ()}
        yield httpbody_pb2.HttpBody(
            content_type="application/json", data=json.dumps(metadata).encode()
        )


Gateway = Callable[..., Awaitable[str]]


@pytest.fixture
async def gateway(
    request: pytest.FixtureRequest, stack_logs: Stack, tmp_path: Path
) -> AsyncIterator[Gateway]:
    """Starts an Envoy in front of the echo router; options override services.authz."""
    server = grpc.aio.server()
    openai_pb2_grpc.add_OpenAIServiceServicer_to_server(EchoRouter(), server)
    health_pb2_grpc.add_HealthServicer_to_server(HealthServicer(), server)
    echo_port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    envoys: list[ManagedProcess] = []

    async def start(**authz: Any) -> str:
        services = stack_logs.config.services
        data = stack_config_data()
        data["services"]["router"]["grpc_port"] = echo_port
        data["services"]["ratelimit"]["grpc_port"] = services.ratelimit.grpc_port
        data["services"]["authz"].update({"grpc_port": services.authz.grpc_port, **authz})
        workdir = tmp_path / f"envoy{len(envoys)}"
        workdir.mkdir()
        _, config = write_config(workdir, data)
        descriptor = descriptor_set().SerializeToString(deterministic=True)
        path = write(workdir, build_bootstrap(config, descriptor), descriptor)
        envoy = config.envoy
        process = ManagedProcess(
            "envoy-echo",
            [find_binary("envoy", "venv"), "-c", str(path), "--disable-hot-restart",
             "--log-level", "warn", "--concurrency", "1"],
            workdir / "envoy.log",
            partial(http_ok, f"http://{envoy.host}:{envoy.admin_port}/ready"),
        )  # fmt: skip
        envoys.append(process)
        logs.watch(request.node, process)
        process.start()
        await process.wait_ready(30)
        return f"http://{envoy.host}:{envoy.listener_port}/v1"

    yield start
    for process in envoys:
        process.stop()
    await server.stop(None)


async def test_spoofed_identity_headers_never_reach_the_router(
    gateway: Gateway, client_api_key: str
) -> None:
    url = await gateway()
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(
            f"{url}/chat/completions",
            json=BODY,
            headers={"authorization": f"Bearer {client_api_key}", **SPOOFED},
        )
    assert response.status_code == 200, response.text
    seen = response.json()
    assert seen["x-llmproxy-tenant"] == "e2e"
    assert seen["x-llmproxy-user"] == "pytest"
    assert seen["x-llmproxy-key-id"] == client_api_key.split("-")[2]
    assert seen["x-llmproxy-tier"] == "default"
    assert seen["x-llmproxy-model"] == "gpt-4o-mini"
    assert seen["x-llmproxy-token-estimate"] == "12"  # 1 + 4 per message + max_tokens 7
    # The client's key stops at the authz service.
    assert "authorization" not in seen
    assert client_api_key not in response.text


async def test_spoofed_headers_without_a_key_are_refused(gateway: Gateway) -> None:
    url = await gateway()
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(f"{url}/chat/completions", json=BODY, headers=SPOOFED)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "missing_api_key"


async def test_fail_open_is_a_choice_and_spoofing_still_fails(
    gateway: Gateway, client_api_key: str
) -> None:
    """With failure_mode_allow and authz unreachable, requests pass with no identity at all."""
    url = await gateway(failure_mode_allow=True, grpc_port=free_port())
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(
            f"{url}/chat/completions",
            json=BODY,
            headers={"authorization": f"Bearer {client_api_key}", **SPOOFED},
        )
    assert response.status_code == 200, response.text
    seen = response.json()
    assert not any(name in seen for name in SPOOFED)
