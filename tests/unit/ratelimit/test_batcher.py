"""The batcher: which checks share a store call, and when a call goes out."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest

from llmproxy.ratelimit.batcher import Batcher
from llmproxy.ratelimit.errors import StoreError
from llmproxy.ratelimit.memory_store import MemoryLimitStore
from llmproxy.ratelimit.store import Outcome, Take
from tests.harness.waiting import eventually

# Long enough that a held flush is unmistakable, short enough for a unit test (and under the
# batcher's longest gap, 1 s, so that sparse load exists for it).
WINDOW_S = 0.2
# The sleeps below are inputs, not waits for an event: the batcher measures the gaps between
# requests on the real clock (and holds with loop.call_later), so a test spaces its requests,
# or lets less than a window pass before it checks that a request is still held.


class RecordingStore(MemoryLimitStore):
    """The memory store, remembering the size of each take call; fails while `error` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []
        self.error: Exception | None = None

    async def take(self, ops: Sequence[Take]) -> list[Outcome]:
        self.calls.append(len(ops))
        if self.error is not None:
            raise self.error
        return await super().take(ops)


def check(key: str, hits: int = 1) -> Take:
    return Take(key, "c", 1000, 60_000, hits)


async def make_dense(batcher: Batcher, store: RecordingStore, count: int = 60) -> None:
    """Requests arriving back to back: the batcher now sees dense load."""
    await asyncio.gather(*(batcher.take([check(f"warm{i}")]) for i in range(count)))
    assert batcher.dense
    store.calls.clear()


async def test_a_lone_request_goes_at_once() -> None:
    store = RecordingStore()
    batcher = Batcher(store, window_s=WINDOW_S)
    start = time.monotonic()
    [outcome] = await asyncio.wait_for(batcher.take([check("k")]), 5)
    assert time.monotonic() - start < WINDOW_S / 2
    assert outcome.allowed
    assert not batcher.dense
    assert store.calls == [1]


async def test_requests_of_one_loop_turn_share_a_call() -> None:
    store = RecordingStore()
    batcher = Batcher(store, window_s=WINDOW_S)
    answers = await asyncio.wait_for(
        asyncio.gather(*(batcher.take([check(f"k{i}"), check("t")]) for i in range(5))), 5
    )
    assert store.calls == [10]
    # Each request gets its own checks' outcomes, in order; "t" was counted by all five.
    assert [a[1].used for a in answers] == [1, 2, 3, 4, 5]


async def test_under_dense_load_requests_wait_the_window_and_share_a_call() -> None:
    store = RecordingStore()
    batcher = Batcher(store, window_s=WINDOW_S)
    await make_dense(batcher, store)
    start = time.monotonic()
    first = asyncio.create_task(batcher.take([check("a")]))
    await asyncio.sleep(WINDOW_S / 4)  # the next request comes a quarter window later
    second = asyncio.create_task(batcher.take([check("b")]))
    await asyncio.wait_for(asyncio.gather(first, second), 5)
    waited = time.monotonic() - start
    assert store.calls == [2]  # one call for both, though they came a quarter window apart
    assert waited >= WINDOW_S * 0.9


async def test_a_full_batch_goes_without_waiting_for_the_window() -> None:
    store = RecordingStore()
    batcher = Batcher(store, max_batch=4, window_s=WINDOW_S)
    await make_dense(batcher, store, count=200)
    start = time.monotonic()
    held = asyncio.create_task(batcher.take([check("a")]))
    await asyncio.sleep(0.01)  # a twentieth of the window
    assert not held.done()  # dense: held for the window
    rest = [asyncio.create_task(batcher.take([check(f"b{i}")])) for i in range(3)]
    await asyncio.wait_for(asyncio.gather(held, *rest), 5)
    assert store.calls == [4]
    assert time.monotonic() - start < WINDOW_S / 2


async def test_after_an_idle_spell_the_next_request_goes_at_once() -> None:
    store = RecordingStore()
    window_s = 0.05  # an idle spell counts as 1 s at most, an eighth of it in the mean
    batcher = Batcher(store, window_s=window_s)
    await make_dense(batcher, store)
    await asyncio.sleep(1.0)  # idle: the mean gap rises past the window
    start = time.monotonic()
    await asyncio.wait_for(batcher.take([check("k")]), 5)
    assert not batcher.dense
    assert time.monotonic() - start < window_s  # the window was not waited


async def one_caller(batcher: Batcher, count: int) -> None:
    """One caller sending each request when it has the last answer: back to back, alone."""
    for i in range(count):
        start = time.monotonic()
        await asyncio.wait_for(batcher.take([check(f"seq{i}")]), 5)
        assert time.monotonic() - start < WINDOW_S / 2  # not held


async def test_a_caller_waiting_for_each_answer_is_never_held() -> None:
    # Its requests come back to back, so the mean gap reads dense, but a hold would gather
    # nobody: every batch carries that one request.
    store = RecordingStore()
    batcher = Batcher(store, window_s=WINDOW_S)
    await one_caller(batcher, 40)
    assert batcher.dense
    assert store.calls == [1] * 40


async def test_holding_starts_when_company_comes() -> None:
    store = RecordingStore()
    batcher = Batcher(store, window_s=WINDOW_S)
    await one_caller(batcher, 40)
    for _ in range(2):  # callers together: batches of ten raise the mean past the bar
        await asyncio.gather(*(batcher.take([check(f"k{i}")]) for i in range(10)))
    store.calls.clear()
    first = asyncio.create_task(batcher.take([check("a")]))
    await asyncio.sleep(WINDOW_S / 4)  # a quarter of the window
    assert not first.done()  # held
    await asyncio.wait_for(asyncio.gather(first, batcher.take([check("b")])), 5)
    assert store.calls == [2]


async def test_a_zero_window_never_holds() -> None:
    store = RecordingStore()
    batcher = Batcher(store, window_s=0)
    await asyncio.gather(*(batcher.take([check(f"k{i}")]) for i in range(60)))
    assert not batcher.dense
    for i in range(3):
        await asyncio.wait_for(batcher.take([check(f"x{i}")]), 5)
    assert store.calls[-3:] == [1, 1, 1]


async def test_closing_sends_what_is_held() -> None:
    store = RecordingStore()
    batcher = Batcher(store, window_s=WINDOW_S)
    await make_dense(batcher, store)
    start = time.monotonic()
    held = asyncio.create_task(batcher.take([check("k")]))
    await asyncio.sleep(0.01)  # a twentieth of the window
    assert not held.done()
    await asyncio.wait_for(batcher.aclose(), 5)
    assert held.done()
    assert time.monotonic() - start < WINDOW_S / 2
    [outcome] = held.result()
    assert outcome.allowed


async def test_a_store_error_reaches_every_request_of_the_batch() -> None:
    store = RecordingStore()
    store.error = StoreError("redis: connection refused")
    batcher = Batcher(store, window_s=WINDOW_S)
    results = await asyncio.gather(
        *(batcher.take([check(f"k{i}")]) for i in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, StoreError) for r in results)
    assert store.calls == [3]
    store.error = None
    [outcome] = await asyncio.wait_for(batcher.take([check("k")]), 5)  # the next call works
    assert outcome.allowed


@pytest.mark.parametrize(
    "arguments",
    [{"max_batch": 0}, {"max_inflight": 0}, {"window_s": -0.001}],
)
def test_invalid_settings_are_refused(arguments: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="need max_batch >= 1"):
        Batcher(RecordingStore(), **arguments)  # type: ignore[arg-type]


class GatedStore(RecordingStore):
    """Takes that wait for the test to open the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def take(self, ops: Sequence[Take]) -> list[Outcome]:
        outcomes = await super().take(ops)
        await self.gate.wait()
        return outcomes


async def test_a_request_cancelled_while_its_checks_are_out_gives_its_hits_back() -> None:
    """Envoy gave up on it (its timeout): it is refused or admitted without this answer."""
    store = GatedStore()
    batcher = Batcher(store, window_s=0)
    given_up = asyncio.create_task(batcher.take([check("k", hits=3), check("j")]))
    waiting = asyncio.create_task(batcher.take([check("k")]))
    await eventually(lambda: store.calls, what="the batch out")
    given_up.cancel()
    store.gate.set()
    [counted] = await waiting
    assert counted.used == 4  # counted while the cancelled request's hits were still in
    await eventually(
        lambda: batcher.take([check("k", hits=0), check("j", hits=0)]),
        lambda found: [o.used for o in found] == [1, 0],
        what="the cancelled request's hits given back",
    )
