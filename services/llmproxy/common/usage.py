"""Usage accounting: tokens, requests and spend per API key, tenant and model, in Redis.

The router records each call's actual usage after the response (streamed ones included); the
authorization service reads spend to enforce budgets. Keys are hash-tagged by the counted
subject so every write touches one Redis Cluster slot.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, Protocol

from llmproxy.common.redis import AnyRedis

Period = Literal["day", "month"]
_TTL_S = {"day": 40 * 86400, "month": 400 * 86400}
_FORMATS = {"day": "%Y%m%d", "month": "%Y%m"}


@dataclass(frozen=True)
class Identity:
    """Who made a request, as the authz service named it in the identity headers."""

    tenant: str
    user: str
    key_id: str


@dataclass(frozen=True)
class Usage:
    """What one call consumed."""

    prompt_tokens: int
    completion_tokens: int
    cost_usd: float

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens


class UsageStore(Protocol):
    """Where usage is counted and spend is read back."""

    async def record(self, identity: Identity, model: str, usage: Usage) -> None:
        """Add one call's usage to the counters of its key, tenant and model."""

    async def spend_usd(self, subject: str, name: str, period: Period) -> float:
        """Spend so far this period of subject ("key", "tenant" or "model") called name."""


def usage_key(subject: str, name: str, period: Period, now: datetime) -> str:
    """The Redis hash counting subject name's usage in the period that contains now."""
    return f"llmproxy:usage:{{{subject}:{name}}}:{period}:{now.strftime(_FORMATS[period])}"


Subject = tuple[str, str]  # ("key" | "tenant" | "model", name)


def _subjects(identity: Identity, model: str) -> list[Subject]:
    return [("key", identity.key_id), ("tenant", identity.tenant), ("model", model)]


class RedisUsageStore:
    """UsageStore on Redis hashes: one pipeline of HINCRBYs per write."""

    def __init__(self, redis: AnyRedis) -> None:
        self._redis = redis

    async def record(self, identity: Identity, model: str, usage: Usage) -> None:
        """Add usage to the day and month counters of the key, the tenant and the model."""
        await self.add(dict.fromkeys(_subjects(identity, model), (1, usage)))

    async def add(self, totals: dict[Subject, tuple[int, Usage]]) -> None:
        """Add (requests, usage) totals per subject to the current day and month counters."""
        now = datetime.now(UTC)
        async with self._redis.pipeline(transaction=False) as pipe:
            for (subject, name), (requests, usage) in totals.items():
                for period in ("day", "month"):
                    key = usage_key(subject, name, period, now)
                    pipe.hincrby(key, "requests", requests)
                    pipe.hincrby(key, "prompt_tokens", usage.prompt_tokens)
                    pipe.hincrby(key, "completion_tokens", usage.completion_tokens)
                    pipe.hincrbyfloat(key, "cost_usd", usage.cost_usd)
                    pipe.expire(key, _TTL_S[period])
            await pipe.execute()

    async def spend_usd(self, subject: str, name: str, period: Period) -> float:
        """Spend recorded so far in the current period."""
        key = usage_key(subject, name, period, datetime.now(UTC))
        value = await self._redis.hget(key, "cost_usd")
        return float(value) if value is not None else 0.0


class BufferedUsageStore:
    """Adds usage up in memory and writes the totals to Redis every interval.

    Under load this turns thousands of writes a second into one pipeline per interval; the
    price is that spend read back (budgets) lags by up to one interval. Totals that cannot be
    written are kept and retried with the next flush.
    """

    def __init__(self, store: RedisUsageStore, interval_s: float = 0.5) -> None:
        self._store = store
        self._interval_s = interval_s
        self._pending: dict[Subject, tuple[int, Usage]] = {}

    def _merge(self, subject: Subject, requests: int, usage: Usage) -> None:
        count, total = self._pending.get(subject, (0, Usage(0, 0, 0.0)))
        self._pending[subject] = (
            count + requests,
            Usage(
                total.prompt_tokens + usage.prompt_tokens,
                total.completion_tokens + usage.completion_tokens,
                total.cost_usd + usage.cost_usd,
            ),
        )

    async def record(self, identity: Identity, model: str, usage: Usage) -> None:
        """Add usage to the pending totals (no I/O)."""
        for subject in _subjects(identity, model):
            self._merge(subject, 1, usage)

    async def spend_usd(self, subject: str, name: str, period: Period) -> float:
        """Spend written so far plus what is still pending here."""
        pending = self._pending.get((subject, name))
        written = await self._store.spend_usd(subject, name, period)
        return written + (pending[1].cost_usd if pending else 0.0)

    async def flush(self) -> None:
        """Write the pending totals; on failure they stay pending."""
        pending, self._pending = self._pending, {}
        if not pending:
            return
        try:
            await self._store.add(pending)
        except BaseException:
            for subject, (requests, usage) in pending.items():
                self._merge(subject, requests, usage)
            raise

    async def flush_forever(self) -> None:
        """Flush every interval until cancelled, then once more."""
        try:
            while True:
                await asyncio.sleep(self._interval_s)
                with contextlib.suppress(Exception):
                    await self.flush()
        finally:
            with contextlib.suppress(Exception):
                await self.flush()
