"""A guard for every integration test: no in-process gRPC server outlives its test's loop."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest


@pytest.fixture(autouse=True)
async def no_server_left_running(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    """Fail the test that leaves a grpc.aio server running, and stop that server.

    A server still running when its event loop closes can never be stopped: grpc's async
    module then hangs in its shutdown (when the last server or channel is garbage collected,
    in whichever later test runs then). Start services with tests.harness.services.served.
    """
    created: list[grpc.aio.Server] = []
    make_server = grpc.aio.server

    def recording(*args: Any, **kwargs: Any) -> grpc.aio.Server:
        server = make_server(*args, **kwargs)
        created.append(server)
        return server

    monkeypatch.setattr(grpc.aio, "server", recording)
    yield
    # The servers' own cygrpc objects know whether they still serve; the wrapper does not say.
    running = [s for s in created if s._server.is_running()]  # type: ignore[attr-defined]
    for server in running:
        await server.stop(None)
    if running:
        pytest.fail(f"{len(running)} grpc.aio server(s) left running by this test")
