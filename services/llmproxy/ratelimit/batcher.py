"""Concurrent requests share Redis calls: checks queued in one event-loop turn go together.

redis-py costs tens of microseconds of Python per command, so one EVALSHA per request would
cap decisions far below what Redis serves. Instead each request queues its checks and waits;
a flush scheduled with call_soon sends everything queued so far as one script call (at most
max_batch checks), with at most max_inflight calls outstanding (one by default: measured,
it doubles the checks per call under load, and a check waits at most one extra Redis round
trip), so that checks pile up into bigger batches exactly when the load is high.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from llmproxy.ratelimit import metrics
from llmproxy.ratelimit.store import Adjust, LimitStore, Outcome, Take

_Waiter = tuple[int, int, "asyncio.Future[list[Outcome]]"]


class Batcher:
    """Coalesces the checks and corrections of concurrent requests into few store calls."""

    def __init__(self, store: LimitStore, max_batch: int = 256, max_inflight: int = 1) -> None:
        self._store = store
        self._max_batch = max_batch
        self._max_inflight = max_inflight
        self._takes: list[Take] = []
        self._waiters: list[_Waiter] = []
        self._adjusts: list[Adjust] = []
        self._scheduled = False
        self._inflight = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def take(self, ops: Sequence[Take]) -> list[Outcome]:
        """Decide ops (atomically each) in the next batch."""
        future: asyncio.Future[list[Outcome]] = asyncio.get_running_loop().create_future()
        start = len(self._takes)
        self._takes.extend(ops)
        self._waiters.append((start, len(self._takes), future))
        self._schedule()
        return await future

    def adjust_soon(self, ops: Sequence[Adjust]) -> None:
        """Queue corrections for the next batch; nobody waits for them."""
        self._adjusts.extend(ops)
        self._schedule()

    def _schedule(self) -> None:
        if not self._scheduled and self._inflight < self._max_inflight:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        if self._inflight >= self._max_inflight or not (self._waiters or self._adjusts):
            return
        # Whole requests only, up to max_batch checks (a larger request goes alone).
        count, end = 0, 0
        for start, stop, _ in self._waiters:
            if count and stop - start + count > self._max_batch:
                break
            count += stop - start
            end += 1
        waiters, self._waiters = self._waiters[:end], self._waiters[end:]
        first = waiters[0][0] if waiters else 0
        takes = self._takes[first : first + count]
        del self._takes[first : first + count]
        self._waiters = [(s - count, e - count, f) for s, e, f in self._waiters]
        adjusts, self._adjusts = self._adjusts, []
        self._inflight += 1
        task = asyncio.get_running_loop().create_task(self._run(takes, waiters, first, adjusts))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._inflight -= 1
        if self._waiters or self._adjusts:
            self._schedule()

    async def _run(
        self, takes: list[Take], waiters: list[_Waiter], first: int, adjusts: list[Adjust]
    ) -> None:
        try:
            if takes:
                metrics.BATCH_CHECKS.observe(len(takes))
            if adjusts:
                outcomes, _ = await asyncio.gather(
                    self._store.take(takes) if takes else _nothing(),
                    self._store.adjust(adjusts),
                )
            else:
                outcomes = await self._store.take(takes)
        except Exception as exc:  # handed to every waiting request, which answers or fails
            for _, _, future in waiters:
                if not future.done():
                    future.set_exception(exc)
            return
        for start, stop, future in waiters:
            if not future.done():  # a cancelled request (Envoy gave up) just drops its answer
                future.set_result(outcomes[start - first : stop - first])

    async def aclose(self) -> None:
        """Wait for the calls in flight."""
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def _nothing() -> list[Outcome]:
    return []
