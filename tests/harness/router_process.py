"""The router as its own process in front of a fake provider, without Envoy in between."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from llmproxy.config import StackConfig
from llmproxy.devstack.probes import grpc_serving
from llmproxy.devstack.process import ManagedProcess
from llmproxy.devstack.stack import fake_provider_process
from tests.harness import logs
from tests.harness.configs import write_config


@asynccontextmanager
async def router_with_fake_provider(
    request: pytest.FixtureRequest, tmp_path: Path, data: dict[str, Any]
) -> AsyncIterator[tuple[ManagedProcess, StackConfig]]:
    """Start the fake provider and the router for config data; the router calls it directly."""
    data["services"]["router"]["via_egress"] = False  # no Envoy here
    data["redis"]["degraded_start"] = True  # no Redis either: the router answers uncached
    path, config = write_config(tmp_path, data)
    provider = fake_provider_process(
        config.fake_provider, ["gpt-4o-mini"], tmp_path / "fakeprovider.log"
    )
    router = ManagedProcess(
        "router",
        [sys.executable, "-m", "llmproxy.router", "--config", str(path)],
        tmp_path / "router.log",
        partial(grpc_serving, f"127.0.0.1:{config.services.router.grpc_port}"),
    )
    logs.watch(request.node, provider, router)
    provider.start()
    router.start()
    try:
        await provider.wait_ready(20)
        await router.wait_ready(20)
        yield router, config
    finally:
        router.stop()
        provider.stop()
