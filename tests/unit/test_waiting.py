"""The one polling helper: it returns what it accepted, and fails saying what it saw last."""

from __future__ import annotations

import asyncio

import pytest

from tests.harness.waiting import eventually, eventually_sync


async def test_eventually_returns_the_accepted_result_of_a_plain_or_async_probe() -> None:
    seen = iter(range(10))

    async def probe() -> int:
        return next(seen)

    assert await eventually(probe, lambda n: n >= 3, what="3", interval_s=0) == 3
    assert await eventually(lambda: next(seen), lambda n: n >= 5, what="5", interval_s=0) == 5


async def test_eventually_fails_with_the_last_result_at_the_deadline() -> None:
    with pytest.raises(AssertionError, match=r"the answer: not within 0.05 s; last seen: 41"):
        await eventually(lambda: 41, lambda n: n == 42, what="the answer", timeout_s=0.05)


async def test_eventually_cuts_a_probe_still_running_at_the_deadline() -> None:
    async def hangs() -> int:
        await asyncio.sleep(60)  # a call that never answers
        return 0

    with pytest.raises(
        AssertionError, match=r"an answer: not within 0.05 s; last seen: 'nothing yet'"
    ):
        await eventually(hangs, what="an answer", timeout_s=0.05)


def test_eventually_sync_counts_ignored_errors_as_not_yet_and_reports_the_last() -> None:
    def refused() -> int:
        raise ConnectionRefusedError("still starting")

    with pytest.raises(AssertionError, match=r"last seen: ConnectionRefusedError\('still"):
        eventually_sync(refused, what="up", timeout_s=0.05, ignoring=(ConnectionRefusedError,))
    with pytest.raises(ZeroDivisionError):  # anything else is a failure at once
        eventually_sync(lambda: 1 / 0, what="never", timeout_s=5)
