"""Waiting for a condition with a deadline, instead of sleeping a guessed time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T]], accept: Callable[[T], bool], timeout_s: float = 10.0
) -> T:
    """Poll probe until accept(result) holds; at the deadline, fail with the last result."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = await probe()
        if accept(result):
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s; last result: {result!r}")
        await asyncio.sleep(0.05)
