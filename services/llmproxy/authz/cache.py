"""The in-process cache of key records in front of the store, kept fresh by invalidations.

A check must not cost a Redis round trip, so records (and misses, so unknown key ids cannot
hammer Redis) are cached for a short TTL. Every change to a record is published on the
invalidation channel and evicted here at once, which is what makes a revocation reach every
instance within a second. The cache is trusted only while that channel is live: while it is
down, lookups go to the store, and once it is back everything cached before is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from functools import partial

from llmproxy.authz.records import Atoms, KeyRecord
from llmproxy.authz.store import KeyStore
from llmproxy.common.redis_feed import RESYNC, Feed, follow_feed

log = logging.getLogger(__name__)

_MISSING = object()


class KeyCache:
    """A TTL and LRU bounded map of key id to record (or None for a known miss).

    Records are kept as plain tuples (KeyRecord.as_atoms), which the garbage collector stops
    tracking: as objects, a full cache made every full collection long enough to stall every
    check, and the short TTL keeps adding new ones, which triggers such collections. Rebuilding
    a record on each hit costs far less than such a stall.
    """

    def __init__(
        self, ttl_s: float, max_entries: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl = ttl_s
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, Atoms | None]] = OrderedDict()
        # Bumped by every eviction: a lookup that raced with one must not cache what it read.
        self.generation = 0

    def get(self, key_id: str) -> KeyRecord | object | None:
        """The cached record, None for a cached miss, or _MISSING."""
        entry = self._entries.get(key_id)
        if entry is None:
            return _MISSING
        stored_at, atoms = entry
        if self._clock() - stored_at >= self._ttl:
            del self._entries[key_id]
            return _MISSING
        self._entries.move_to_end(key_id)
        return None if atoms is None else KeyRecord.from_atoms(atoms)

    def put(self, key_id: str, record: KeyRecord | None) -> None:
        """Cache record (or a miss) for key_id, evicting the least recently used beyond max."""
        self._entries[key_id] = (self._clock(), None if record is None else record.as_atoms())
        self._entries.move_to_end(key_id)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def evict(self, key_id: str) -> None:
        """Forget key_id."""
        self._entries.pop(key_id, None)
        self.generation += 1

    def clear(self) -> None:
        """Forget everything."""
        self._entries.clear()
        self.generation += 1

    def __len__(self) -> int:
        return len(self._entries)


class CachedKeys:
    """Key lookups through the cache, and the loop that applies invalidations to it."""

    def __init__(
        self,
        store: KeyStore,
        cache: KeyCache,
        retry_min_s: float = 0.1,
        retry_max_s: float = 2.0,
    ) -> None:
        self._store = store
        self._cache = cache
        self._retry_min = retry_min_s
        self._retry_max = retry_max_s
        self.live = False
        # Set once the first subscription attempt has ended either way (startup waits on it).
        self.first_attempt_done = asyncio.Event()
        # Store reads under way, by key id and the cache generation they started in.
        self._reads: dict[tuple[str, int], asyncio.Future[KeyRecord | None]] = {}

    async def get(self, key_id: str) -> KeyRecord | None:
        """The record of key_id: cached while the invalidation feed is live, else from the store.

        Concurrent lookups of a key that is not cached share one store read: a burst of requests
        with a new key (its first traffic) must not open a Redis connection each. Only a read
        started since the last eviction is shared, so a revocation is never answered with a
        record read before it.
        """
        if self.live:
            cached = self._cache.get(key_id)
            if cached is not _MISSING:
                return cached  # type: ignore[return-value]  # a record or a cached miss
        generation = self._cache.generation
        ident = (key_id, generation)
        read = self._reads.get(ident)
        if read is None:
            read = asyncio.ensure_future(self._read(key_id, generation))
            self._reads[ident] = read
            read.add_done_callback(partial(self._read_done, ident))
        # Shielded: one waiter cancelled (Envoy gave up on its check) must not fail the others.
        return await asyncio.shield(read)

    def _read_done(self, ident: tuple[str, int], read: asyncio.Future[KeyRecord | None]) -> None:
        self._reads.pop(ident, None)
        if not read.cancelled():
            read.exception()  # retrieved: when every waiter gave up, nobody else will

    async def _read(self, key_id: str, generation: int) -> KeyRecord | None:
        record = await self._store.get(key_id)
        if self.live and generation == self._cache.generation:
            self._cache.put(key_id, record)
        return record

    def apply(self, event: str) -> None:
        """Apply one invalidation event."""
        if event == RESYNC:
            self._cache.clear()
            self.live = True
        else:
            self._cache.evict(event)

    async def follow(self, feed: Feed) -> None:
        """Apply the feed's events forever, resubscribing with backoff when it fails."""

        def apply(event: str) -> None:
            self.apply(event)
            self.first_attempt_done.set()

        def lost() -> None:
            log.warning("invalidation channel lost; key cache bypassed until it is back")
            self.live = False
            self._cache.clear()
            self.first_attempt_done.set()

        await follow_feed(feed, apply, lost, self._retry_min, self._retry_max)
