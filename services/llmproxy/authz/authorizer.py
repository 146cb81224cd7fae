"""The decision: is this key valid, allowed this model, and within its budget?"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Protocol

from llmproxy.authz.errors import (
    BudgetExceededError,
    ControlTokenAsKeyError,
    InvalidKeyError,
    KeyExpiredError,
    KeyRevokedError,
    MissingKeyError,
    ModelNotAllowedError,
)
from llmproxy.authz.keys import CONTROL_TOKEN_PREFIX, KeyHasher, key_id_of
from llmproxy.authz.records import KeyRecord
from llmproxy.common.usage import Period


class KeyLookup(Protocol):
    """Finds a key's record by id (through a cache in production)."""

    async def get(self, key_id: str) -> KeyRecord | None:
        """The record, or None."""


class SpendLookup(Protocol):
    """Reads a key's spend so far (from Redis, or as last read while it is down)."""

    async def spend_usd(self, subject: str, name: str, period: Period) -> float:
        """Spend so far this period of subject called name."""


class Authorizer:
    """Decides whether a presented key may make a request for a model."""

    def __init__(
        self,
        keys: KeyLookup,
        hasher: KeyHasher,
        usage: SpendLookup,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys = keys
        self._hasher = hasher
        self._usage = usage
        self._clock = clock

    async def authorize(self, credential: str | None, model: str | None) -> KeyRecord:
        """The key's record when the request may go on; raises a Denied error saying why not.

        Order matters: nothing about a key is revealed (revoked, expired, its models) to a
        caller who has not shown its secret.
        """
        if credential is None:
            raise MissingKeyError
        key_id = key_id_of(credential)
        if key_id is None:
            # A person who pasted their control token gets told so; the prefix they sent is all
            # the message goes by, so it reveals nothing about any token.
            if credential.startswith(CONTROL_TOKEN_PREFIX):
                raise ControlTokenAsKeyError
            raise InvalidKeyError
        record = await self._keys.get(key_id)
        now = self._clock()
        if record is None or not record.secret_matches(self._hasher, credential, now):
            raise InvalidKeyError
        if record.revoked:
            raise KeyRevokedError(key_id)
        if record.expired(now):
            expired = datetime.fromtimestamp(record.expires_at or 0, UTC).isoformat()
            raise KeyExpiredError(key_id, expired)
        if model is not None and not record.allows_model(model):
            raise ModelNotAllowedError(key_id, model)
        await self._check_budget(record)
        return record

    async def _check_budget(self, record: KeyRecord) -> None:
        # Spend is what the router recorded for finished calls: a request is refused once the
        # budget is spent, not priced in advance (the price table is the router's).
        periods: tuple[tuple[str, Period, float], ...] = (
            ("daily", "day", record.daily_budget_usd),
            ("monthly", "month", record.monthly_budget_usd),
        )
        limits = [(name, period, limit) for name, period, limit in periods if limit > 0]
        if not limits:
            return
        spent = await asyncio.gather(
            *(self._usage.spend_usd("key", record.key_id, period) for _, period, _ in limits)
        )
        for (name, _, limit), amount in zip(limits, spent, strict=True):
            if amount >= limit:
                raise BudgetExceededError(record.key_id, name, limit, amount)
