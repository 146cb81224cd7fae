"""The local store's algorithms (the Lua scripts' twins), on a fake clock."""

from __future__ import annotations

import pytest

from llmproxy.ratelimit.memory_store import MemoryLimitStore
from llmproxy.ratelimit.rules import COUNTER, LOG
from llmproxy.ratelimit.store import Adjust, Take


class Clock:
    def __init__(self, now: int = 1_000_000_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


async def test_the_sliding_log_is_exact_over_any_window() -> None:
    clock = Clock()
    store = MemoryLimitStore(clock)
    take = Take("k", LOG, 3, 1000, 1)
    assert [o.allowed for o in await store.take([take] * 4)] == [True, True, True, False]
    refused = (await store.take([take]))[0]
    assert refused.reset_ms == 1000  # the first hit leaves the window in a second
    clock.now += 999
    assert not (await store.take([take]))[0].allowed
    clock.now += 1
    assert (await store.take([take]))[0].allowed


async def test_the_sliding_counter_weighs_the_previous_window() -> None:
    clock = Clock(10_000)  # the start of a window
    store = MemoryLimitStore(clock)
    take = Take("k", COUNTER, 10, 1000, 1)
    assert all(o.allowed for o in await store.take([take] * 10))
    clock.now += 1000  # next window: the previous 10 still weigh 10 * (1 - 0)
    assert not (await store.take([take]))[0].allowed
    clock.now += 500  # half way: they weigh 5
    outcomes = await store.take([take] * 6)
    assert [o.allowed for o in outcomes] == [True] * 5 + [False]


async def test_weighted_hits_fit_or_are_refused_whole() -> None:
    store = MemoryLimitStore(Clock())
    first, second = await store.take([Take("t", LOG, 1000, 60_000, 700)] * 2)
    assert first.allowed
    assert not second.allowed
    assert (second.used, second.remaining) == (700, 300)
    assert (await store.take([Take("t", LOG, 1000, 60_000, 300)]))[0].allowed


@pytest.mark.parametrize("algorithm", [LOG, COUNTER])
async def test_adjust_moves_a_reservation_to_the_actual_usage(algorithm: str) -> None:
    clock = Clock()
    store = MemoryLimitStore(clock)
    (reserved,) = await store.take([Take("t", algorithm, 1000, 60_000, 600)])
    assert await store.adjust([Adjust("t", algorithm, 60_000, -400, reserved.now_ms)]) == 1
    (look,) = await store.take([Take("t", algorithm, 1000, 60_000, 0)])
    assert look.used == 200
    # A correction for a window that has passed is skipped.
    clock.now += 200_000
    assert await store.adjust([Adjust("t", algorithm, 60_000, -100, reserved.now_ms)]) == 0


async def test_reset_forgets() -> None:
    store = MemoryLimitStore(Clock())
    await store.take([Take("k", LOG, 1, 1000, 1)])
    assert await store.reset("k", LOG)
    assert not await store.reset("k", LOG)
    assert (await store.take([Take("k", LOG, 1, 1000, 1)]))[0].allowed
