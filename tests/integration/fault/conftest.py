"""The fault service in process on a free port over a real Redis: a factory, stopped after."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any

import pytest

from llmproxy.config import StackConfig
from llmproxy.fault.server import serve
from tests.harness.ports import free_port
from tests.harness.services import Served, served

SERVICES = ("router", "ratelimit", "authz", "health")


def fault_config(redis_url: str) -> StackConfig:
    """The fault service on port 0; nothing else reachable (no Envoy admin, no agents)."""
    services: dict[str, Any] = {name: {"grpc_port": 0, "metrics_port": 0} for name in SERVICES}
    services["fault"] = {
        "grpc_port": 0,
        "metrics_port": 0,
        "rtds_ttl_s": 2,
        "rtds_heartbeat_s": 0.3,
    }
    return StackConfig.model_validate(
        {
            "redis": {"url": redis_url},
            "envoy": {"admin_port": free_port()},
            "services": services,
        }
    )


StartFault = Callable[[StackConfig], Awaitable[Served]]


@pytest.fixture
async def start_fault() -> AsyncIterator[StartFault]:
    """Starts fault services for configs (see fault_config); all stopped after the test."""
    async with AsyncExitStack() as stack:

        async def start(config: StackConfig) -> Served:
            return await stack.enter_async_context(served(serve(config)))

        yield start
