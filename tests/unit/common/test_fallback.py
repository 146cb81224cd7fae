"""The primary/local switch on a fake clock: when it degrades, probes, comes back, and says so."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import pytest

from llmproxy.common.fallback import FallbackSwitch, bounded
from tests.harness.waiting import eventually

log = logging.getLogger("tests.fallback")


class Unavailable(Exception):
    """What the fake primary raises when it is down."""


class FakeClock:
    """Time that moves only when the test moves it; sleepers wake once it reaches them."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleepers = 0
        self._moved = asyncio.Condition()

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        wake_at = self.now + seconds
        self.sleepers += 1
        try:
            async with self._moved:
                await self._moved.wait_for(lambda: self.now >= wake_at)
        finally:
            self.sleepers -= 1

    async def advance(self, seconds: float) -> None:
        self.now += seconds
        async with self._moved:
            self._moved.notify_all()

    async def advance_a_sleeper(self, seconds: float) -> None:
        """Advance once something sleeps on this clock (a task just started may not yet)."""

        async def sleepers() -> int:
            return self.sleepers

        await eventually(sleepers, lambda n: n > 0)
        await self.advance(seconds)


class Primary:
    """A primary that answers or raises Unavailable, counting its calls and probes."""

    def __init__(self) -> None:
        self.down = False
        self.calls = 0
        self.probes = 0

    async def get(self) -> str:
        self.calls += 1
        if self.down:
            raise Unavailable("redis: connection refused")
        return "primary"

    async def ping(self) -> None:
        self.probes += 1
        if self.down:
            raise Unavailable("redis: connection refused")


async def local() -> str:
    return "local"


class Recorder:
    """What the switch told the service, in order."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def on_change(self, degraded: bool) -> None:
        self.events.append("degraded" if degraded else "normal")

    def on_return(self) -> None:
        self.events.append("resync")


def switch(
    clock: FakeClock,
    recorder: Recorder,
    probe: Callable[[], Awaitable[object]] | None = None,
    *,
    probe_timeout_s: float | None = None,
    timeouts_to_degrade: int = 1,
) -> FallbackSwitch:
    return FallbackSwitch(
        log=log,
        degraded_message="redis down: serving locally",
        restored_message="redis back: serving shared",
        unavailable=(Unavailable,),
        probe_interval_s=1.0,
        probe=probe,
        probe_timeout_s=probe_timeout_s,
        timeouts_to_degrade=timeouts_to_degrade,
        on_change=recorder.on_change,
        on_return=recorder.on_return,
        clock=clock,
        sleep=clock.sleep,
    )


async def probes(primary: Primary) -> int:
    return primary.probes


async def test_an_unavailable_primary_switches_to_local_at_once_with_one_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, recorder, primary = FakeClock(), Recorder(), Primary()
    fallback = switch(clock, recorder)
    assert await fallback.call(primary.get, local) == "primary"
    primary.down = True
    with caplog.at_level(logging.INFO, logger=log.name):
        assert await fallback.call(primary.get, local) == "local"
        assert await fallback.call(primary.get, local) == "local"
    assert fallback.degraded
    assert primary.calls == 2  # the second local answer did not wait on the primary
    assert recorder.events == ["degraded"]
    (line,) = caplog.records
    assert (line.levelno, line.getMessage()) == (logging.WARNING, "redis down: serving locally")
    assert line.error == "redis: connection refused"  # type: ignore[attr-defined]


async def test_without_a_probe_the_first_call_after_each_interval_tries_the_primary(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=log.name)
    clock, recorder, primary = FakeClock(), Recorder(), Primary()
    fallback = switch(clock, recorder)
    primary.down = True
    await fallback.call(primary.get, local)
    await clock.advance(0.9)
    assert not fallback.use_primary()
    await clock.advance(0.1)
    assert await fallback.call(primary.get, local) == "local"  # tried, still down
    assert primary.calls == 2
    assert not fallback.use_primary()  # a failed try waits another interval
    primary.down = False
    await clock.advance(1.0)
    assert await fallback.call(primary.get, local) == "primary"
    assert not fallback.degraded
    assert recorder.events == ["degraded", "resync", "normal"]
    # One line each way, however many calls failed in between.
    assert [r.getMessage() for r in caplog.records] == [
        "redis down: serving locally",
        "redis back: serving shared",
    ]


async def test_errors_that_do_not_mean_unavailable_reach_the_caller() -> None:
    clock, recorder = FakeClock(), Recorder()
    fallback = switch(clock, recorder)

    async def broken() -> str:
        raise ValueError("a bug, not an outage")

    with pytest.raises(ValueError, match="a bug"):
        await fallback.call(broken, local)
    assert not fallback.degraded
    assert recorder.events == []


async def test_only_timeouts_in_a_row_degrade() -> None:
    clock, recorder = FakeClock(), Recorder()
    fallback = switch(clock, recorder, timeouts_to_degrade=3)
    for _ in range(2):
        fallback.timed_out(TimeoutError())
    fallback.succeeded()
    for _ in range(2):
        fallback.timed_out(TimeoutError())
    assert not fallback.degraded
    fallback.timed_out(TimeoutError())
    assert fallback.degraded
    assert recorder.events == ["degraded"]


async def test_a_background_probe_brings_the_primary_back_after_the_resync() -> None:
    clock, recorder, primary = FakeClock(), Recorder(), Primary()
    fallback = switch(clock, recorder, primary.ping)
    try:
        primary.down = True
        fallback.failed(Unavailable("redis: connection refused"))
        assert recorder.events == ["degraded"]
        await clock.advance_a_sleeper(1.0)
        await eventually(lambda: probes(primary), lambda n: n == 1)
        assert fallback.degraded
        assert not fallback.use_primary()  # calls never probe when a background probe does
        primary.down = False
        await clock.advance_a_sleeper(1.0)
        await eventually(lambda: probes(primary), lambda n: n == 2)
        assert not fallback.degraded
        assert fallback.use_primary()
        assert recorder.events == ["degraded", "resync", "normal"]
    finally:
        await fallback.aclose()


async def test_a_probe_that_hangs_counts_as_down() -> None:
    clock, recorder, primary = FakeClock(), Recorder(), Primary()
    hung = asyncio.Event()

    async def hangs() -> None:
        primary.probes += 1
        await hung.wait()

    fallback = switch(clock, recorder, hangs, probe_timeout_s=0.01)
    try:
        fallback.failed(Unavailable("redis: connection refused"))
        await clock.advance_a_sleeper(1.0)
        await eventually(lambda: probes(primary), lambda n: n == 1)
        await clock.advance_a_sleeper(1.0)
        await eventually(lambda: probes(primary), lambda n: n == 2)  # the first one timed out
        assert fallback.degraded
    finally:
        await fallback.aclose()


async def test_closing_stops_the_probe() -> None:
    clock, recorder, primary = FakeClock(), Recorder(), Primary()
    fallback = switch(clock, recorder, primary.ping)
    primary.down = True
    fallback.failed(Unavailable("redis: connection refused"))

    async def sleepers() -> int:
        return clock.sleepers

    await eventually(sleepers, lambda n: n == 1)  # the probe waits for its interval
    async with asyncio.timeout(5):
        await fallback.aclose()
    assert clock.sleepers == 0
    assert primary.probes == 0


async def test_bounded_times_a_slow_primary_out() -> None:
    never = asyncio.get_running_loop().create_future()
    with pytest.raises(TimeoutError):
        await bounded(never, 0.02)


async def test_bounded_gives_more_time_when_this_process_made_the_deadline_late() -> None:
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[str] = loop.create_future()
    call = asyncio.create_task(bounded(answer, 0.05))
    await asyncio.sleep(0)  # bounded sets its deadline
    time.sleep(0.1)  # noqa: ASYNC251 - this event loop is busy past the deadline, on purpose
    loop.call_later(0.01, answer.set_result, "late, not lost")
    assert await call == "late, not lost"


async def test_bounded_waits_on_while_patience_lasts_and_counts_each_period() -> None:
    never = asyncio.get_running_loop().create_future()
    periods: list[int] = []

    def patience() -> bool:
        periods.append(len(periods) + 1)
        return len(periods) < 4  # the fourth slow period is one too many

    with pytest.raises(TimeoutError):
        await bounded(never, 0.005, patience=patience)
    assert periods == [1, 2, 3, 4]
