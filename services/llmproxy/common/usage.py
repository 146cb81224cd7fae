"""Usage accounting: tokens, requests and spend per API key, tenant and model, in Redis.

The router records each call's actual usage after the response (streamed ones included); the
authorization service reads spend to enforce budgets. Keys are hash-tagged by the counted
subject so every write touches one Redis Cluster slot.
"""

from __future__ import annotations

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


class RedisUsageStore:
    """UsageStore on Redis hashes with HINCRBY, one pipeline per subject."""

    def __init__(self, redis: AnyRedis) -> None:
        self._redis = redis

    async def record(self, identity: Identity, model: str, usage: Usage) -> None:
        """Add usage to the day and month counters of the key, the tenant and the model."""
        now = datetime.now(UTC)
        for subject, name in (
            ("key", identity.key_id),
            ("tenant", identity.tenant),
            ("model", model),
        ):
            # One pipeline per subject: its keys share a hash tag, hence a cluster slot.
            async with self._redis.pipeline(transaction=False) as pipe:
                for period in ("day", "month"):
                    key = usage_key(subject, name, period, now)
                    pipe.hincrby(key, "requests", 1)
                    pipe.hincrby(key, "prompt_tokens", usage.prompt_tokens)
                    pipe.hincrby(key, "completion_tokens", usage.completion_tokens)
                    pipe.hincrbyfloat(key, "cost_usd", usage.cost_usd)
                    pipe.expire(key, _TTL_S[period])
                await pipe.execute()

    async def spend_usd(self, subject: str, name: str, period: Period) -> float:
        """Spend recorded so far in the current period."""
        value = await self._redis.hget(
            usage_key(subject, name, period, datetime.now(UTC)), "cost_usd"
        )
        return float(value) if value is not None else 0.0
