"""The fault leader's lease in Redis, with a fencing token.

One key holds the lease: `<token> <holder> <address>`, set with NX and a PX expiry. Taking it
increments a counter first, so every new term has a larger token than any before (a fencing
token: a write checked against the lease value can only succeed for the current term).
Renewing and releasing are compare-and-set (Lua): only the exact value of this term extends or
deletes the key. Every experiment write of the leader goes through `fenced_hset`, which writes
only while the lease still holds this term's value, so a deposed leader (paused, partitioned,
slow) cannot overwrite what its successor decided.

A restarted instance may take over at once a term held at its own address: that holder is
dead, since this process owns the address now. Only for addresses that name one machine's
socket (an IP literal: `reclaim_own_address`), never a shared DNS name.

The holder also keeps a local deadline: the time it *sent* its last successful renewal plus
lease_s. Redis measures the key's expiry from when it *ran* the command, which is later, so the
holder always believes it has lost the lease before Redis lets anybody else take it.

Keys share the experiments hash's hash slot (`{<prefix>:experiments}:leader`), so the fenced
write's two keys are one slot on a Redis Cluster too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from redis.exceptions import RedisError

from llmproxy.common.redis import AnyRedis
from llmproxy.fault.errors import NotLeaderError, StoreUnavailableError

# KEYS[1] lease, KEYS[2] fencing counter; ARGV[1] holder, ARGV[2] address, ARGV[3] ms,
# ARGV[4] '1' to take over a term held at this very address.
ACQUIRE = """
local held = redis.call('GET', KEYS[1])
if held then
  if ARGV[4] ~= '1' or string.match(held, '^%d+ %S+ (.*)$') ~= ARGV[2] then return false end
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], token .. ' ' .. ARGV[1] .. ' ' .. ARGV[2], 'PX', ARGV[3])
return token
"""
# KEYS[1] lease; ARGV[1] this term's value, ARGV[2] ms.
RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""
RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
return 1
"""
# KEYS[1] lease, KEYS[2] hash; ARGV[1] this term's value, ARGV[2] field, ARGV[3] data.
FENCED_HSET = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
return 1
"""
# KEYS[1] lease, KEYS[2] key; ARGV[1] this term's value, ARGV[2] data.
FENCED_SET = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
return 1
"""


def experiments_key(prefix: str) -> str:
    """The hash of every experiment's record."""
    return f"{prefix}:experiments"


def slot_key(prefix: str, name: str) -> str:
    """A key in the experiments hash's slot (hash-tagged with its whole name)."""
    return f"{{{experiments_key(prefix)}}}:{name}"


@dataclass(frozen=True)
class Holder:
    """Who holds the lease: the term's fencing token, the holder's id and gRPC address."""

    token: int
    holder: str
    address: str

    @classmethod
    def parse(cls, value: bytes | str) -> Holder | None:
        """The holder a lease value names, or None if it is not one."""
        text = value.decode() if isinstance(value, bytes) else value
        parts = text.split(" ", 2)
        if len(parts) != 3 or not parts[0].isdigit():
            return None
        return cls(int(parts[0]), parts[1], parts[2])

    @property
    def value(self) -> str:
        """The lease key's value for this term."""
        return f"{self.token} {self.holder} {self.address}"


class Lease:
    """One instance's side of the leader lease: take, renew, release, and fenced writes."""

    def __init__(
        self,
        redis: AnyRedis,
        prefix: str,
        *,
        holder: str,
        address: str,
        lease_s: float,
        clock: Callable[[], float] = time.monotonic,
        reclaim_own_address: bool = False,
    ) -> None:
        self._redis = redis
        self.key = slot_key(prefix, "leader")
        self.fence_key = slot_key(prefix, "fence")
        self.holder = holder
        self.address = address
        self.lease_s = lease_s
        self._clock = clock
        self.reclaim_own_address = reclaim_own_address
        self._ms = max(1, round(lease_s * 1000))
        self.term: Holder | None = None
        self._deadline = 0.0
        self.last_seen: Holder | None = None
        """The holder last read from Redis (ours or another's): where followers forward to."""

    @property
    def held(self) -> bool:
        """Whether this instance holds the lease, by its own (conservative) clock."""
        return self.term is not None and self._clock() < self._deadline

    @property
    def token(self) -> int | None:
        """This term's fencing token while held."""
        return self.term.token if self.held and self.term is not None else None

    def _unavailable(self, exc: RedisError) -> StoreUnavailableError:
        return StoreUnavailableError(f"Redis is unreachable, the leader lease is unknown ({exc})")

    async def acquire(self) -> bool:
        """Take the lease if nobody holds it; True when this instance now does."""
        sent = self._clock()
        try:
            token = await self._redis.eval(
                ACQUIRE,
                2,
                self.key,
                self.fence_key,
                self.holder,
                self.address,
                str(self._ms),
                "1" if self.reclaim_own_address else "0",
            )
        except RedisError as exc:
            raise self._unavailable(exc) from exc
        if token is None:
            await self.current()
            return False
        self.term = Holder(int(token), self.holder, self.address)
        self.last_seen = self.term
        self._deadline = sent + self.lease_s
        return True

    async def renew(self, redis: AnyRedis | None = None) -> bool:
        """Extend this term; False (and the term dropped) when the lease is no longer ours.

        redis: another connection to renew on (the Redis pauser's, which Redis serves between
        two pauses). A Redis error leaves the term to run out by the local deadline.
        """
        term = self.term
        if term is None:
            return False
        sent = self._clock()
        try:
            renewed = await (redis or self._redis).eval(
                RENEW, 1, self.key, term.value, str(self._ms)
            )
        except RedisError as exc:
            raise self._unavailable(exc) from exc
        return self._renewed(term, sent, renewed)

    def _renewed(self, term: Holder, sent: float, renewed: object) -> bool:
        # A renewal's answer for term, sent at `sent`: whether the lease is still ours.
        if self.term is not term:
            return self.held
        if not renewed:
            self.term = None
            return False
        self._deadline = max(self._deadline, sent + self.lease_s)
        return True

    def queue_renew(self, pipe: Any) -> Callable[[object], bool]:
        """Queue this term's renewal on a pipeline; the returned function takes its result and
        says whether the term holds (as renew() does). Needs a term."""
        term = self.term
        if term is None:
            raise NotLeaderError("no lease term to renew")
        sent = self._clock()
        pipe.eval(RENEW, 1, self.key, term.value, str(self._ms))
        return partial(self._renewed, term, sent)

    async def release(self) -> None:
        """Give the lease up (shutdown): a follower takes over at once, not after lease_s."""
        term, self.term = self.term, None
        if term is None:
            return
        try:
            await self._redis.eval(RELEASE, 1, self.key, term.value)
        except RedisError as exc:
            raise self._unavailable(exc) from exc

    def drop(self) -> None:
        """Forget this term locally (its deadline passed, or a fenced write was refused)."""
        self.term = None

    async def current(self) -> Holder | None:
        """Who holds the lease now, as Redis says."""
        try:
            value = await self._redis.get(self.key)
        except RedisError as exc:
            raise self._unavailable(exc) from exc
        self.last_seen = None if value is None else Holder.parse(value)
        return self.last_seen

    def _fenced_term(self) -> Holder:
        term = self.term
        if term is None or not self.held:
            raise NotLeaderError("this fault instance is not the leader (its lease ran out)")
        return term

    async def fenced_hset(self, key: str, field: str, data: bytes) -> None:
        """HSET key field data, only while this term holds the lease (NotLeaderError if not)."""
        term = self._fenced_term()
        try:
            written = await self._redis.eval(FENCED_HSET, 2, self.key, key, term.value, field, data)
        except RedisError as exc:
            raise self._unavailable(exc) from exc
        self._refused(written, term)

    async def fenced_set(self, key: str, data: bytes) -> None:
        """SET key data, only while this term holds the lease (NotLeaderError if not)."""
        term = self._fenced_term()
        try:
            written = await self._redis.eval(FENCED_SET, 2, self.key, key, term.value, data)
        except RedisError as exc:
            raise self._unavailable(exc) from exc
        self._refused(written, term)

    def _refused(self, written: object, term: Holder) -> None:
        if written:
            return
        if self.term is term:
            self.term = None
        raise NotLeaderError(
            f"fenced write refused: lease term {term.token} is over (another instance leads)"
        )
