"""Known keys keep working while Redis is down: last-known records, for a bounded grace.

The lookups' Redis client answers within `redis_timeout_s` and does not retry (authz.server),
so a hanging Redis turns into a decision from memory well within Envoy's timeout.

Every key record and budget spend read from Redis is remembered here. When Redis stops
answering, checks are decided from what was remembered (`common.fallback` decides when), for
at most `stale_grace_s` from the moment Redis was lost; after that, and for any key never seen,
the check fails closed (UNAVAILABLE, which Envoy answers with 503). What cannot happen meanwhile
is said in docs/redis.md: no revocation reaches us (the admin API writes to Redis), and spend is
as last read, since the router keeps its usage buffered until Redis is back. Once Redis
answers, lookups go to it again and the in-process cache resyncs through the invalidation feed.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from redis.exceptions import RedisError

from llmproxy.authz.authorizer import KeyLookup, SpendLookup
from llmproxy.authz.errors import KeyStoreUnavailableError
from llmproxy.authz.records import Atoms, KeyRecord
from llmproxy.common.fallback import FallbackSwitch
from llmproxy.common.usage import Period

log = logging.getLogger(__name__)

SpendKey = tuple[str, str, str]  # (subject, name, period)
_UNAVAILABLE = (RedisError, OSError, TimeoutError)


class LastKnown:
    """Bounded LRU memory of key records (as plain tuples, out of the collector's sight) and
    budget spend, as last read from Redis."""

    def __init__(self, max_keys: int) -> None:
        self._max = max_keys
        self._records: OrderedDict[str, tuple[int, Atoms]] = OrderedDict()
        self._spend: OrderedDict[SpendKey, float] = OrderedDict()

    def remember(self, key_id: str, record: KeyRecord | None) -> None:
        """Keep record as key_id's last-known one; a key found missing is forgotten."""
        if record is None:
            self._records.pop(key_id, None)
            return
        known = self._records.get(key_id)
        if known is None or known[0] != record.version:  # a record changes only with its version
            self._records[key_id] = (record.version, record.as_atoms())
        self._records.move_to_end(key_id)
        if len(self._records) > self._max:
            self._records.popitem(last=False)

    def record(self, key_id: str) -> KeyRecord | None:
        """The last-known record of key_id, or None if it was never seen."""
        known = self._records.get(key_id)
        return None if known is None else KeyRecord.from_atoms(known[1])

    def remember_spend(self, key: SpendKey, amount: float) -> None:
        """Keep a spend as last read."""
        self._spend[key] = amount
        self._spend.move_to_end(key)
        if len(self._spend) > 2 * self._max:  # a daily and a monthly figure per key
            self._spend.popitem(last=False)

    def spend(self, key: SpendKey) -> float | None:
        """The spend as last read, or None if it never was."""
        return self._spend.get(key)


class FallbackKeys:
    """Key lookups and budget spend from Redis, and from last-known values while it is down."""

    def __init__(
        self,
        keys: KeyLookup,
        usage: SpendLookup,
        *,
        ping: Callable[[], Awaitable[object]],
        probe_timeout_s: float,
        stale_grace_s: float,
        max_keys: int,
        probe_interval_s: float = 0.5,
        on_change: Callable[[bool], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._keys = keys
        self._usage = usage
        self._grace_s = stale_grace_s
        self._clock = clock
        self._on_change = on_change
        self.last_known = LastKnown(max_keys)
        self._lost_at = 0.0
        self._switch = FallbackSwitch(
            log=log,
            degraded_message="redis unreachable: known keys are authorized from their "
            "last-known records",
            restored_message="redis reachable again: keys are read from Redis",
            unavailable=_UNAVAILABLE,
            probe_interval_s=probe_interval_s,
            probe=ping,
            probe_timeout_s=probe_timeout_s,
            on_change=self._changed,
            clock=clock,
        )

    @property
    def degraded(self) -> bool:
        """True while checks are decided from last-known records."""
        return self._switch.degraded

    def _changed(self, degraded: bool) -> None:
        if degraded:
            self._lost_at = self._clock()
        if self._on_change is not None:
            self._on_change(degraded)

    def _within_grace(self) -> None:
        lost_for = self._clock() - self._lost_at
        if lost_for > self._grace_s:
            raise KeyStoreUnavailableError(
                f"Redis unreachable for {lost_for:.0f} s, past the {self._grace_s:g} s grace "
                "of last-known keys"
            )

    # Both lookups run on every check: the switch's protocol written out, without the closures
    # FallbackSwitch.call would take.

    async def get(self, key_id: str) -> KeyRecord | None:
        """The record of key_id: from Redis (through the cache), or its last-known one."""
        if self._switch.use_primary():
            try:
                record = await self._keys.get(key_id)
            except _UNAVAILABLE as exc:
                self._switch.failed(exc)
            else:
                self._switch.succeeded()
                self.last_known.remember(key_id, record)
                return record
        self._within_grace()
        known = self.last_known.record(key_id)
        if known is None:  # never seen: no verdict without Redis
            raise KeyStoreUnavailableError(f"Redis unreachable and key {key_id} unknown here")
        return known

    async def spend_usd(self, subject: str, name: str, period: Period) -> float:
        """Spend so far this period: from Redis, or as last read while it is down."""
        key = (subject, name, period)
        if self._switch.use_primary():
            try:
                amount = await self._usage.spend_usd(subject, name, period)
            except _UNAVAILABLE as exc:
                self._switch.failed(exc)
            else:
                self._switch.succeeded()
                self.last_known.remember_spend(key, amount)
                return amount
        self._within_grace()
        known = self.last_known.spend(key)
        if known is None:
            raise KeyStoreUnavailableError(f"Redis unreachable and no spend known for {name}")
        return known

    async def aclose(self) -> None:
        """Stop probing Redis."""
        await self._switch.aclose()
