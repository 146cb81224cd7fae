"""A service as its own process: config errors, JSON logs, /metrics, graceful SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import pytest
import yaml

from llmproxy._gen.router.v1 import openai_pb2, openai_pb2_grpc, router_pb2, router_pb2_grpc
from llmproxy.common.contract import SERVICES
from llmproxy.devstack.process import ManagedProcess
from tests.harness.configs import stack_config_data, write_config
from tests.harness.router_process import router_with_fake_provider
from tests.harness.services import admin_channel
from tests.harness.waiting import eventually


@pytest.mark.parametrize("service", SERVICES)
def test_invalid_config_stops_startup_naming_the_field(tmp_path: Path, service: str) -> None:
    data = stack_config_data()
    data["services"][service]["grpc_port"] = "not-a-port"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    done = subprocess.run(
        [sys.executable, "-m", f"llmproxy.{service}", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert f"services.{service}.grpc_port: Input should be a valid integer" in done.stderr


def test_invalid_environment_override_stops_startup(tmp_path: Path) -> None:
    path, _ = write_config(tmp_path, stack_config_data())
    done = subprocess.run(
        [sys.executable, "-m", "llmproxy.router", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={"LLMPROXY__ENVOY__ADMIN_PORT": "99999", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 2
    assert "envoy.admin_port: Input should be less than or equal to 65535" in done.stderr


@pytest.mark.parametrize("service", SERVICES)
def test_no_redis_at_startup_stops_it_naming_the_field(tmp_path: Path, service: str) -> None:
    # stack_config_data's Redis is on a free port where nothing listens.
    path, config = write_config(tmp_path, stack_config_data())
    done = subprocess.run(
        [sys.executable, "-m", f"llmproxy.{service}", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert f"llmproxy.{service}: redis.url: no Redis answers at {config.redis.url}" in done.stderr
    assert "redis.degraded_start: true" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_config_error_found_while_starting_exits_2_without_a_traceback(tmp_path: Path) -> None:
    # Found by health's serve(), not by the config model: run_service reports it all the same.
    data = stack_config_data()
    data["services"]["health"]["provider_probes"] = {"opnai": {"mode": "models"}}
    path, _ = write_config(tmp_path, data)
    done = subprocess.run(
        [sys.executable, "-m", "llmproxy.health", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "llmproxy.health: invalid configuration: services.health.provider_probes" in done.stderr
    assert "Traceback" not in done.stderr


async def provider_chats(data: dict[str, object]) -> int:
    """Chat completions the fake provider process has received."""
    port = data["fake_provider"]["port"]  # type: ignore[index]
    async with httpx.AsyncClient(trust_env=False) as client:
        stats = (await client.get(f"http://127.0.0.1:{port}/_fake/stats")).json()
    return int(stats["requests"].get("/v1/chat/completions", 0))


@pytest.fixture
async def router_and_provider(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[ManagedProcess, dict[str, object]]]:
    """The router process in front of a fake provider that takes 1.5 s per answer."""
    data = stack_config_data(fake_provider={"latency_ms": 1500})
    async with router_with_fake_provider(request, tmp_path, data) as (router, _):
        yield router, data


async def test_sigterm_lets_in_flight_calls_finish(
    router_and_provider: tuple[ManagedProcess, dict[str, object]],
) -> None:
    router, data = router_and_provider
    port = data["services"]["router"]["grpc_port"]  # type: ignore[index]
    body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = openai_pb2_grpc.OpenAIServiceStub(channel)
        call = stub.CreateChatCompletion(
            openai_pb2.CreateChatCompletionRequest(body={"data": body.encode()})
        )
        await eventually(  # the provider is now holding the call for its 1.5 s
            lambda: provider_chats(data),
            lambda count: count >= 1,
            what="the call reaching the provider",
            ignoring=(httpx.HTTPError,),
        )
        router.signal(signal.SIGTERM)
        chunks = [chunk async for chunk in call]
    assert await call.code() == grpc.StatusCode.OK
    answer = json.loads(chunks[0].data)
    assert answer["choices"][0]["message"]["content"] == "This is a fake answer to: hi"
    assert router.stop(grace_s=10) == 0
    assert "shutting down" in router.log_tail()


async def test_logs_are_json_and_metrics_count_rpcs(
    router_and_provider: tuple[ManagedProcess, dict[str, object]],
) -> None:
    router, data = router_and_provider
    services = data["services"]
    port = services["router"]["grpc_port"]  # type: ignore[index]
    metrics_port = services["router"]["metrics_port"]  # type: ignore[index]
    async with admin_channel(f"127.0.0.1:{port}") as channel:
        await router_pb2_grpc.RouterServiceStub(channel).ListModels(router_pb2.ListModelsRequest())
    async with httpx.AsyncClient() as client:
        metrics = (await client.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
    assert (
        'llmproxy_grpc_server_handled_total{code="OK",method="ListModels",'
        'service="llmproxy.router.v1.RouterService"} 1.0'
    ) in metrics
    assert "llmproxy_grpc_server_handling_seconds_bucket" in metrics
    lines = [json.loads(line) for line in router.log_tail().splitlines() if line.strip()]
    assert any(entry["msg"] == "serving" and entry["service"] == "router" for entry in lines)
