"""In-process gRPC services for integration tests: started on port 0, stopped in their own loop.

Every `start_<service>` fixture has one shape: an `AsyncExitStack` that enters `served(...)`
for each instance a test asks for, so that all of them are stopped, last started first, each
one even when another's stop fails, before the test's event loop closes.

Why that matters: a grpc.aio server still running when its loop closes can never be stopped.
When grpc later shuts its async module down (as the last server or channel is garbage
collected, in whichever test runs then) it waits, forever, for that server's pending calls, and
meanwhile the server's finalizer warns that its `shutdown` coroutine was never awaited.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import grpc

from llmproxy.common.credentials import bearer_channel
from llmproxy.common.server import RunningServer
from llmproxy.common.settings import ControlSettings

GRACE_S = 1.0  # in-flight calls get this long at teardown; the test's own calls are gone by then
READY_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Served:
    """A running in-process service and a channel to it."""

    running: RunningServer
    channel: grpc.aio.Channel  # presents the bootstrap admin token
    internal: grpc.aio.Channel  # presents the service token, as the other services do

    @property
    def port(self) -> int:
        """The port the service bound (it was asked for port 0)."""
        return self.running.port


def admin_channel(target: str) -> grpc.aio.Channel:
    """A channel whose every call presents the bootstrap admin token (tests/conftest.py sets it).

    Every service accepts that token itself, so a service under test needs no authz beside it.
    """
    return bearer_channel(target, os.environ[ControlSettings().admin_token_env])


def service_channel(target: str) -> grpc.aio.Channel:
    """A channel whose every call presents the stack's service token, as the services do: for
    the RPCs only they may call (ReportOutcomes, ReconcileTokens*)."""
    return bearer_channel(target, os.environ[ControlSettings().service_token_env])


@asynccontextmanager
async def served(serving: Awaitable[RunningServer]) -> AsyncIterator[Served]:
    """Start a service (its `serve(...)` awaitable) and yield it once its channel (an
    admin_channel) is ready.

    On exit the channel is closed, then the service stops: grace for in-flight calls, then its
    own closers (Redis clients, HTTP sessions, tasks).
    """
    running = await serving
    try:
        target = f"127.0.0.1:{running.port}"
        async with admin_channel(target) as channel, service_channel(target) as internal:
            await asyncio.wait_for(channel.channel_ready(), READY_TIMEOUT_S)
            yield Served(running, channel, internal)
    finally:
        await running.stop(GRACE_S)
