"""LimitStore in this process's memory: the same algorithms as the Lua scripts, per instance.

Used while Redis is unreachable. Its counts are this instance's only; the limiter hands it
limits divided by the live number of instances (fallback.py) so that all of them together stay
near the limit.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from llmproxy.ratelimit.rules import LOG
from llmproxy.ratelimit.store import Adjust, Outcome, Take


def wall_ms() -> int:
    """Milliseconds since the epoch, like Redis TIME."""
    return time.time_ns() // 1_000_000


@dataclass
class _Log:
    entries: list[tuple[int, int]] = field(default_factory=list)  # (time ms, hits), sorted
    total: int = 0

    def expire(self, cutoff: int) -> None:
        end = bisect.bisect_right(self.entries, (cutoff, math.inf))
        if end:
            self.total -= sum(hits for _, hits in self.entries[:end])
            del self.entries[:end]


class MemoryLimitStore:
    """Sliding counters and logs in dicts; bounded by max_keys (oldest keys dropped first)."""

    def __init__(self, clock: Callable[[], int] = wall_ms, max_keys: int = 100_000) -> None:
        self._clock = clock
        self._max_keys = max_keys
        self._counters: dict[str, dict[int, int]] = {}
        self._logs: dict[str, _Log] = {}

    def _bound(self, table: dict[str, object]) -> None:
        if len(table) > self._max_keys:
            for name in list(table)[: max(1, self._max_keys // 10)]:
                del table[name]

    def _take_counter(self, op: Take, now: int) -> Outcome:
        window, need = op.window_ms, max(op.hits, 1)
        idx = now // window
        counts = self._counters.setdefault(op.key, {})
        for stale in [i for i in counts if i < idx - 1]:
            del counts[stale]
        curr, prev = counts.get(idx, 0), counts.get(idx - 1, 0)
        elapsed = now - idx * window
        est = prev * (window - elapsed) / window + curr
        allowed = est + need <= op.limit
        reset = window
        if allowed:
            if op.hits:
                counts[idx] = curr + op.hits
                est += op.hits
            reset = window - elapsed
        elif need <= op.limit:
            if curr + need > op.limit:
                reset = window - elapsed + math.ceil(window * (1 - (op.limit - need) / curr))
            else:
                reset = math.ceil(window * (1 - (op.limit - curr - need) / prev)) - elapsed
        used = math.ceil(est)
        self._bound(self._counters)  # type: ignore[arg-type]
        return Outcome(allowed, used, max(0, op.limit - used), max(1, reset), now)

    def _take_log(self, op: Take, now: int) -> Outcome:
        window, need = op.window_ms, max(op.hits, 1)
        log = self._logs.setdefault(op.key, _Log())
        log.expire(now - window)
        allowed = log.total + need <= op.limit
        reset = window
        if allowed:
            if op.hits:
                bisect.insort(log.entries, (now, op.hits))
                log.total += op.hits
            if log.entries:
                reset = log.entries[0][0] + window - now
        elif need <= op.limit:
            excess, freed = log.total + need - op.limit, 0
            for at, hits in log.entries:
                freed += hits
                if freed >= excess:
                    reset = at + window - now
                    break
        self._bound(self._logs)  # type: ignore[arg-type]
        return Outcome(allowed, log.total, max(0, op.limit - log.total), max(1, reset), now)

    async def take(self, ops: Sequence[Take]) -> list[Outcome]:
        """Decide every check in order."""
        now = self._clock()
        return [
            self._take_log(op, now) if op.algorithm == LOG else self._take_counter(op, now)
            for op in ops
        ]

    async def adjust(self, ops: Sequence[Adjust]) -> int:
        """Apply corrections whose window has not passed."""
        now = self._clock()
        applied = 0
        for op in ops:
            at = min(op.at_ms, now)
            if op.delta == 0:
                continue
            if op.algorithm == LOG:
                log = self._logs.get(op.key)
                if at <= now - op.window_ms or (log is None and op.delta < 0):
                    continue
                log = self._logs.setdefault(op.key, _Log())
                bisect.insort(log.entries, (at, op.delta))
                log.total += op.delta
            else:
                idx = at // op.window_ms
                counts = self._counters.get(op.key)
                if idx < now // op.window_ms - 1 or (
                    op.delta < 0 and (counts is None or idx not in counts)
                ):
                    continue
                counts = self._counters.setdefault(op.key, {})
                counts[idx] = counts.get(idx, 0) + op.delta
            applied += 1
        return applied

    async def reset(self, key: str, algorithm: str) -> bool:
        """Forget a counter."""
        table: dict[str, object] = self._logs if algorithm == LOG else self._counters  # type: ignore[assignment]
        return table.pop(key, None) is not None

    async def ping(self) -> None:
        """Always answers."""

    async def aclose(self) -> None:
        """Nothing to release."""

    def clear(self) -> None:
        """Forget every counter (when the shared store is back, its counts are the truth)."""
        self._counters.clear()
        self._logs.clear()
