"""Shutdown: every closer runs even when one before it fails, and the failure still surfaces."""

from __future__ import annotations

import asyncio
import logging

import pytest

from llmproxy.common.server import cancelling, close_all


async def test_every_closer_runs_in_order_and_the_first_error_is_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ran: list[str] = []

    async def redis_pool() -> None:
        ran.append("redis")

    async def goodbye() -> None:
        ran.append("goodbye")
        raise ConnectionError("the peer went away")

    async def http_session() -> None:
        ran.append("http")
        raise ValueError("second failure")

    with caplog.at_level(logging.ERROR), pytest.raises(ConnectionError, match="went away"):
        await close_all([goodbye, http_session, redis_pool])
    assert ran == ["goodbye", "http", "redis"]
    # Both failures are logged, naming their closer.
    failed = [r.closer for r in caplog.records if r.getMessage() == "closing failed"]  # type: ignore[attr-defined]
    assert failed == [goodbye.__qualname__, http_session.__qualname__]


async def test_nothing_to_raise_when_all_close() -> None:
    ran: list[int] = []

    async def close() -> None:
        ran.append(1)

    await close_all([close, close])
    assert ran == [1, 1]


async def test_cancelling_stops_the_tasks_listed_when_it_runs() -> None:
    tasks: list[asyncio.Task[None]] = []
    close = cancelling(tasks)
    tasks.append(asyncio.create_task(asyncio.sleep(3600)))  # added after the closer was made
    await close()
    assert all(task.cancelled() for task in tasks)
