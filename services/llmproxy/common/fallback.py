"""A shared store (Redis) with a local fallback: which side serves a call, and when to switch.

A service that keeps state in Redis keeps serving while Redis is down by answering from this
instance's memory meanwhile. `FallbackSwitch` is the state machine they share; each service
wraps its store Protocol in an adapter that asks the switch which side serves a call, tells it
how the primary's call went, and decides for itself what must not be served locally.

Normal: calls go to the primary. An error that means it is unavailable switches to local at
once; timeouts do only after `timeouts_to_degrade` in a row, since one slow call on a busy
machine is not an outage. Degraded: calls go to local, and the primary is probed every
`probe_interval_s`: by `probe` in a background task when the service gives one, otherwise by
the next call once the interval has passed. When the primary answers, `on_return` runs (the
service resyncs or drops its local state), then calls go to the primary again. Each switch is
one log line and one `on_change(degraded)` call.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")
_LATE_EXTENSIONS = 3


class FallbackSwitch:
    """Decides whether the primary or the local side serves a call, and switches between them.

    `degraded` is True while local serves. The service's adapter calls `use_primary()` before
    each call and then `succeeded()`, `failed(error)` or `timed_out(error)` after the primary's
    answer, or hands both sides to `call()`, which does all of that.
    """

    def __init__(
        self,
        *,
        log: logging.Logger,
        degraded_message: str,
        restored_message: str,
        unavailable: tuple[type[Exception], ...],
        probe_interval_s: float,
        probe: Callable[[], Awaitable[object]] | None = None,
        probe_timeout_s: float | None = None,
        timeouts_to_degrade: int = 1,
        on_change: Callable[[bool], None] | None = None,
        on_return: Callable[[], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self._log = log
        self._degraded_message = degraded_message
        self._restored_message = restored_message
        self._unavailable = unavailable
        self._probe_errors: tuple[type[Exception], ...] = (*unavailable, TimeoutError)
        self._probe_interval_s = probe_interval_s
        self._probe = probe
        self._probe_timeout_s = probe_timeout_s
        self._timeouts_to_degrade = timeouts_to_degrade
        self._on_change = on_change
        self._on_return = on_return
        self._clock = clock
        self._sleep = sleep
        self._timeouts = 0
        self._retry_at = 0.0
        self._probing: asyncio.Task[None] | None = None
        self.degraded = False

    def use_primary(self) -> bool:
        """Whether this call goes to the primary: always unless degraded; while degraded, only
        as the probe (when there is no background probe) once the interval has passed."""
        return not self.degraded or (self._probe is None and self._clock() >= self._retry_at)

    def succeeded(self) -> None:
        """The primary answered: timeouts count from zero again, and a probing call is back."""
        self._timeouts = 0
        if self.degraded and self._probe is None:
            self._restore()

    def failed(self, error: BaseException) -> None:
        """The primary is unavailable: switch to local (a probing call: another interval)."""
        if self._probe is None:
            self._retry_at = self._clock() + self._probe_interval_s
        if self.degraded:
            return
        self.degraded = True
        self._log.warning(
            self._degraded_message, extra={"error": str(error) or type(error).__name__}
        )
        if self._on_change is not None:
            self._on_change(True)
        if self._probe is not None:
            probe = self._probe
            self._probing = asyncio.get_running_loop().create_task(self._probe_until_back(probe))

    def timed_out(self, error: BaseException) -> None:
        """The primary did not answer in time: only consecutive timeouts mean it is down."""
        self._timeouts += 1
        if self.degraded or self._timeouts >= self._timeouts_to_degrade:
            self.failed(error)

    async def call(
        self, primary: Callable[[], Awaitable[T]], local: Callable[[], Awaitable[T]]
    ) -> T:
        """The primary's answer when it serves and answers, otherwise local's."""
        if self.use_primary():
            try:
                result = await primary()
            except self._unavailable as exc:
                self.failed(exc)
            else:
                self.succeeded()
                return result
        return await local()

    def _restore(self) -> None:
        if self._on_return is not None:
            self._on_return()
        self._timeouts = 0
        self.degraded = False
        self._log.info(self._restored_message)
        if self._on_change is not None:
            self._on_change(False)

    async def _probe_until_back(self, probe: Callable[[], Awaitable[object]]) -> None:
        while True:
            await self._sleep(self._probe_interval_s)
            try:
                async with asyncio.timeout(self._probe_timeout_s):
                    await probe()
            except self._probe_errors:
                continue
            self._restore()
            return

    async def aclose(self) -> None:
        """Stop probing."""
        if self._probing is not None:
            self._probing.cancel()
            await asyncio.gather(self._probing, return_exceptions=True)


async def bounded(
    call: Awaitable[T], timeout_s: float, *, patience: Callable[[], bool] | None = None
) -> T:
    """The primary's answer, or TimeoutError if the primary (not this process) is slow.

    A deadline that fires late means this process's own event loop was busy (the answer may be
    waiting in the socket): that is load, not an outage, so the call gets more time, a few
    times, rather than degrading every instance under load. Then, when patience is given, each
    deadline asks patience() whether to wait another timeout_s (it may count the slow period):
    the call is awaited in place all along, and expires only when patience() says no.
    """
    loop = asyncio.get_running_loop()
    extensions = _LATE_EXTENSIONS
    async with asyncio.timeout(None) as scope:

        def check(deadline: float) -> None:
            nonlocal extensions
            now = loop.time()
            if now - deadline >= timeout_s / 2 and extensions > 0:
                extensions -= 1
            elif patience is None or not patience():
                scope.reschedule(now)  # expire: the primary had its time
                return
            timers.append(loop.call_at(now + timeout_s, check, now + timeout_s))

        deadline = loop.time() + timeout_s
        timers = [loop.call_at(deadline, check, deadline)]
        try:
            return await call
        finally:
            timers[-1].cancel()
    raise AssertionError("unreachable")  # pragma: no cover - the scope returns or raises
