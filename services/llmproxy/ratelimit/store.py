"""What the limiter asks of its counters: batched atomic checks, corrections, resets.

Two implementations: RedisLimitStore (redis_store.py, shared by every instance) and
MemoryLimitStore (memory_store.py, one instance's own, used while Redis is unreachable).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(slots=True)
class Take:
    """Check one descriptor's limit and count hits if they fit (hits 0: only look)."""

    key: str
    algorithm: str  # rules.LOG or rules.COUNTER
    limit: int
    window_ms: int
    hits: int


@dataclass(slots=True)
class Outcome:
    """A Take's answer."""

    allowed: bool
    used: int
    remaining: int
    reset_ms: int  # allowed: until the window moves on; refused: until the hits would fit
    now_ms: int  # the store's clock when it decided


@dataclass(slots=True)
class Adjust:
    """Add delta (negative: give back) to the hits a key counted at at_ms."""

    key: str
    algorithm: str
    window_ms: int
    delta: int
    at_ms: int


def give_back(takes: Sequence[Take], outcomes: Sequence[Outcome]) -> list[Adjust]:
    """The corrections that undo what takes counted (the allowed ones with hits)."""
    return [
        Adjust(take.key, take.algorithm, take.window_ms, -take.hits, outcome.now_ms)
        for take, outcome in zip(takes, outcomes, strict=True)
        if outcome.allowed and take.hits
    ]


class LimitStore(Protocol):
    """Counters of sliding windows, each check atomic."""

    async def take(self, ops: Sequence[Take]) -> list[Outcome]:
        """Decide every check, in order, atomically each."""

    async def adjust(self, ops: Sequence[Adjust]) -> int:
        """Apply corrections; returns how many applied (expired windows are skipped)."""

    async def reset(self, key: str, algorithm: str) -> bool:
        """Forget a counter; True when it existed."""

    async def ping(self) -> None:
        """Raise StoreError unless the store answers."""

    async def aclose(self) -> None:
        """Release connections."""


def sum_key(key: str) -> str:
    """The running-sum key of a sliding log (same hash tag, so the same cluster slot)."""
    return key + ":sum"
