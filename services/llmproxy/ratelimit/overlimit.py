"""Keys known to be over their limit until a time: refused locally, without asking Redis.

As envoyproxy/ratelimit's local cache: once Redis refuses a key, every further request for it
is refused by this instance until the reset Redis gave. A refusal of h hits also covers any
request of at least h hits (until the reset no hits leave the window), but not smaller ones.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class OverLimitCache:
    """Refusals remembered until their reset; bounded, oldest dropped first."""

    def __init__(self, max_keys: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._max_keys = max_keys
        self._clock = clock
        self._until: dict[str, tuple[float, int, int]] = {}

    def refused(self, key: str, hits: int) -> tuple[int, int] | None:
        """(ms until key may take hits again, its count then) if a refusal covers it, else None."""
        found = self._until.get(key)
        if found is None:
            return None
        deadline, min_hits, used = found
        left = deadline - self._clock()
        if left <= 0:
            del self._until[key]
            return None
        if hits < min_hits:
            return None
        return max(1, int(left * 1000)), used

    def remember(self, key: str, hits: int, reset_ms: int, used: int) -> None:
        """Key (used hits counted) refused hits; no request of as many can pass for reset_ms."""
        if self._max_keys <= 0:
            return
        if len(self._until) >= self._max_keys:
            now = self._clock()
            for name in [n for n, (d, _, _) in self._until.items() if d <= now]:
                del self._until[name]
            if len(self._until) >= self._max_keys:
                del self._until[next(iter(self._until))]
        self._until[key] = (self._clock() + reset_ms / 1000, max(hits, 1), used)

    def forget(self, key: str) -> None:
        """Drop key's refusal (its usage was reset)."""
        self._until.pop(key, None)

    def clear(self) -> None:
        """Drop every refusal (the limits changed)."""
        self._until.clear()

    def __len__(self) -> int:
        return len(self._until)
