"""Waiting for a condition with a deadline, instead of sleeping a guessed time.

Every test that waits for something to happen polls it here: `eventually` in async code,
`eventually_sync` in plain code. The probe is read until `accept` takes its result; at the
deadline the test fails naming what it waited for and what the probe last returned (or raised).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

INTERVAL_S = 0.02  # short next to every deadline, long enough not to busy a shared core


class _Poll:
    """One polling run: its deadline, and what the probe gave last."""

    def __init__(self, what: str, timeout_s: float) -> None:
        self.what = what
        self.timeout_s = timeout_s
        self.deadline = time.monotonic() + timeout_s
        self.last: object = "nothing yet"

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self.deadline

    def failure(self) -> AssertionError:
        return AssertionError(
            f"{self.what}: not within {self.timeout_s} s; last seen: {self.last!r}"
        )


async def eventually(
    probe: Callable[[], Awaitable[T]] | Callable[[], T],
    accept: Callable[[T], object] = bool,
    *,
    what: str = "condition",
    timeout_s: float = 10.0,
    ignoring: tuple[type[Exception], ...] = (),
    interval_s: float = INTERVAL_S,
) -> T:
    """Poll probe (a coroutine function or a plain one) until accept(result); return the result.

    Exceptions of the types in `ignoring` count as "not yet" (a peer still starting, say) and
    are reported as the last thing seen. Fails with AssertionError at the deadline, also when
    a probe is still running then (a call that hangs).
    """
    poll = _Poll(what, timeout_s)
    while True:
        deadline = asyncio.timeout(poll.remaining())
        try:
            async with deadline:
                found: Any = probe()
                if inspect.isawaitable(found):
                    found = await found
        except TimeoutError:
            if not deadline.expired():
                raise  # the probe's own
            raise poll.failure() from None
        except ignoring as exc:
            poll.last = exc
        else:
            if accept(found):
                return found  # type: ignore[no-any-return]
            poll.last = found
        if poll.expired():
            raise poll.failure()
        await asyncio.sleep(interval_s)


def eventually_sync(
    probe: Callable[[], T],
    accept: Callable[[T], object] = bool,
    *,
    what: str = "condition",
    timeout_s: float = 10.0,
    ignoring: tuple[type[Exception], ...] = (),
    interval_s: float = INTERVAL_S,
) -> T:
    """`eventually` for synchronous code: blocks the thread between polls (and cannot cut a
    probe short: give the calls it makes their own timeouts)."""
    poll = _Poll(what, timeout_s)
    while True:
        try:
            found = probe()
        except ignoring as exc:
            poll.last = exc
        else:
            if accept(found):
                return found
            poll.last = found
        if poll.expired():
            raise poll.failure()
        time.sleep(interval_s)
