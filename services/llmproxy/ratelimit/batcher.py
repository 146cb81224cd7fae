"""Concurrent requests share Redis calls: checks queued close together go in one script call.

Every script call costs the same fixed Python and Redis work whatever its size (a task, a
deadline, a write, a read, Redis's own command handling), so one call per request would cap
decisions far below what Redis serves. Instead each request queues its checks and waits; a
flush sends everything queued so far as one script call (at most max_batch checks), with at
most max_inflight calls outstanding (one by default: checks pile up while a call is out).

When the flush runs depends on the load, measured as the mean gap between requests:
- sparse (gap of at least the window): in this event-loop turn, so a lone request waits for
  nothing but Redis;
- dense (the window is expected to gather at least one more request): the window (2 ms by
  default, so from 500 requests/s) after the flush is due, so a busy instance sends fewer,
  larger calls, each check costing less CPU here and in Redis (docs/benchmarks.md has the
  batch sizes). The window is envoyproxy/ratelimit's REDIS_PIPELINE_WINDOW, applied only under
  load.
A full batch (max_batch checks queued) is sent at once either way.

Holding also needs company: batches must carry at least 1.5 requests on average (a moving mean
over every batch, held or not). The mean gap alone cannot tell many callers from one caller
that sends its next request as soon as it has the answer: that one arrives right after each
answer, so it reads as dense, yet each hold would only delay it and gather nobody: it would be
held to one decision per window. Several callers share batches even
unheld (what arrives while a call is out goes in the next), so their mean rises past 1.5 and
holding starts. (Whether a hold gathered anyone is no test: under full load many gather nobody,
every request in flight being queued already, yet holding is what keeps the batches large.)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from llmproxy.ratelimit import metrics
from llmproxy.ratelimit.store import Adjust, LimitStore, Outcome, Take, give_back

_Waiter = tuple[int, int, "asyncio.Future[list[Outcome]]"]
_MEAN_WEIGHT = 1 / 8  # of the newest sample in each moving mean: a burst counts within ~10
_MAX_GAP_S = 1.0  # an idle spell counts as this gap, so one request after it reads as sparse
_COMPANY = 1.5  # mean requests a batch must carry for holding to gather anyone


class Batcher:
    """Coalesces the checks and corrections of concurrent requests into few store calls."""

    def __init__(
        self,
        store: LimitStore,
        max_batch: int = 256,
        max_inflight: int = 1,
        window_s: float = 0.002,
    ) -> None:
        if max_batch < 1 or max_inflight < 1 or window_s < 0:
            raise ValueError(
                "need max_batch >= 1, max_inflight >= 1 and window_s >= 0, got "
                f"max_batch={max_batch}, max_inflight={max_inflight}, window_s={window_s}"
            )
        self._store = store
        self._max_batch = max_batch
        self._max_inflight = max_inflight
        self._window_s = window_s
        self._takes: list[Take] = []
        self._waiters: list[_Waiter] = []
        self._adjusts: list[Adjust] = []
        self._scheduled = False
        self._held: asyncio.TimerHandle | None = None  # a flush waiting for the window
        self._batch_requests = 1.0  # moving mean of the requests a batch carries
        self._inflight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._gap_s = _MAX_GAP_S  # moving mean of the time between requests
        self._last_s = 0.0

    @property
    def dense(self) -> bool:
        """Requests arrive close enough together for the window to gather at least one more."""
        return self._gap_s < self._window_s

    async def take(self, ops: Sequence[Take]) -> list[Outcome]:
        """Decide ops (atomically each) in the next batch."""
        now = time.monotonic()
        self._gap_s += (min(now - self._last_s, _MAX_GAP_S) - self._gap_s) * _MEAN_WEIGHT
        self._last_s = now
        future: asyncio.Future[list[Outcome]] = asyncio.get_running_loop().create_future()
        start = len(self._takes)
        self._takes.extend(ops)
        self._waiters.append((start, len(self._takes), future))
        if len(self._takes) >= self._max_batch:
            self._send_held()  # a full batch goes now
        self._schedule()
        return await future

    def adjust_soon(self, ops: Sequence[Adjust]) -> None:
        """Queue corrections for the next batch; nobody waits for them."""
        self._adjusts.extend(ops)
        self._schedule()

    def _schedule(self) -> None:
        if self._scheduled or self._inflight >= self._max_inflight:
            return
        self._scheduled = True
        loop = asyncio.get_running_loop()
        holding = bool(self._waiters) and self.dense and self._batch_requests >= _COMPANY
        if holding and len(self._takes) < self._max_batch:
            self._held = loop.call_later(self._window_s, self._flush)
        else:
            loop.call_soon(self._flush)

    def _send_held(self) -> None:
        # A flush waiting for the window goes in this loop turn instead.
        if self._held is not None:
            self._held.cancel()
            self._held = None
            self._scheduled = False
            self._schedule()

    def _flush(self) -> None:
        self._scheduled = False
        self._held = None
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
        if end:
            self._batch_requests += (end - self._batch_requests) * _MEAN_WEIGHT
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
        refunds: list[Adjust] = []
        for start, stop, future in waiters:
            answer = outcomes[start - first : stop - first]
            if not future.done():
                future.set_result(answer)
            else:
                # Cancelled: Envoy gave up on the request and refuses or admits it without
                # this answer, so what it counted must not stay counted.
                refunds.extend(give_back(takes[start - first : stop - first], answer))
        if refunds:
            self.adjust_soon(refunds)

    async def aclose(self) -> None:
        """Send everything queued without waiting for the window, and wait for the answers."""
        self._window_s = 0.0
        self._send_held()
        while self._tasks or self._scheduled:
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await asyncio.sleep(0)


async def _nothing() -> list[Outcome]:
    return []
