"""Where the fleet of health instances shares provider state: a Protocol and its Redis form.

Per provider, under one hash tag so that Redis Cluster keeps them in one slot:
  <prefix>:{<name>}:probes    list of probe results as JSON, newest first, trimmed, expiring
  <prefix>:{<name>}:circuit   hash: the circuit breaker and its window (circuit.lua)
  <prefix>:{<name>}:admin     hash: maintenance and its reason, disabled_reason
  <prefix>:{<name>}:lock      the probe lock of the current interval (SET NX PX)
The probe results expire when no instance has probed for a while, so that a fleet started
from nothing runs its startup probes again.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Protocol

from redis.exceptions import RedisError

from llmproxy.common.lua import LuaScript
from llmproxy.common.redis import AnyRedis
from llmproxy.health.circuit import slice_s
from llmproxy.health.errors import StoreUnavailableError
from llmproxy.health.records import (
    AdminRecord,
    CircuitRecord,
    Outcome,
    ProbeResult,
    SharedState,
    Transition,
)
from llmproxy.health.settings import CircuitSettings

CIRCUIT = LuaScript.beside(__file__, "circuit.lua")

Loaded = dict[str, tuple[SharedState, list[Transition]]]


class HealthStore(Protocol):
    """Shared provider state: probe results, circuits, maintenance, the probe lock."""

    async def try_lock_probe(self, provider: str, ttl_s: float, owner: str) -> bool:
        """Take the probe of provider for the next ttl_s; False if another instance has it."""

    async def add_probe(self, provider: str, result: ProbeResult, keep: int, ttl_s: float) -> None:
        """Record a probe result, keeping the newest keep, all expiring after ttl_s."""

    async def record_outcomes(
        self, provider: str, outcomes: Sequence[Outcome], now: float
    ) -> tuple[CircuitRecord, list[Transition]]:
        """Feed outcomes (oldest first) to provider's circuit; its record and transitions."""

    async def load(self, providers: Sequence[str], now: float) -> Loaded:
        """Each provider's shared state, its circuit brought up to now (with the transitions
        that took)."""

    async def set_maintenance(self, provider: str, maintenance: bool, reason: str) -> None:
        """Drain provider by hand (maintenance=True), or put it back."""

    async def set_disabled(self, provider: str, reason: str) -> None:
        """Disable provider with a reason, or enable it with an empty reason."""

    async def ping(self) -> None:
        """Raise StoreUnavailableError unless the store answers."""

    async def aclose(self) -> None:
        """Release connections."""


def circuit_from_json(raw: str | bytes) -> tuple[CircuitRecord, list[Transition]]:
    """Decode the Lua script's answer."""
    data: dict[str, Any] = json.loads(raw)
    # cjson encodes an empty Lua table as an object, whatever it was meant to be.
    transitions = data.get("transitions") or []
    buckets = data.get("buckets") or {}
    record = CircuitRecord(
        state=data["state"],
        opened_at=float(data["opened_at"]),
        consecutive_failures=int(data["consecutive"]),
        trial_successes=int(data["trials"]),
        reason=data["reason"],
        buckets={int(k): (int(v[0]), int(v[1])) for k, v in buckets.items()},
    )
    return record, [Transition(b, a, r) for b, a, r in transitions]


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


class RedisHealthStore:
    """HealthStore on Redis (standalone or cluster); every error is StoreUnavailableError."""

    def __init__(self, redis: AnyRedis, settings: CircuitSettings, prefix: str) -> None:
        self._redis = redis
        self._settings = settings
        self._prefix = prefix
        # Long enough to outlive the window and an open period, short enough to forget.
        self._circuit_ttl_ms = int(1000 * (2 * max(settings.window_s, settings.open_s) + 60))

    def key(self, provider: str, what: str) -> str:
        """The Redis key of one provider's what (probes, circuit, admin, lock)."""
        return f"{self._prefix}:{{{provider}}}:{what}"

    def _circuit_args(self, now: float, outcomes: Sequence[Outcome]) -> list[str | int]:
        s = self._settings
        return [
            repr(now),
            repr(slice_s(s)),
            s.buckets,
            s.consecutive_failures,
            repr(s.error_rate),
            s.min_calls,
            repr(s.open_s),
            s.close_after,
            self._circuit_ttl_ms,
            f"{s.window_s:g}",
            *(o.code() for o in outcomes),
        ]

    async def try_lock_probe(self, provider: str, ttl_s: float, owner: str) -> bool:
        try:
            taken = await self._redis.set(
                self.key(provider, "lock"), owner, nx=True, px=max(1, int(ttl_s * 1000))
            )
        except (RedisError, OSError) as exc:
            raise StoreUnavailableError(f"redis: {exc}") from exc
        return bool(taken)

    async def add_probe(self, provider: str, result: ProbeResult, keep: int, ttl_s: float) -> None:
        key = self.key(provider, "probes")
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.lpush(key, result.to_json())
                pipe.ltrim(key, 0, keep - 1)
                pipe.pexpire(key, max(1, int(ttl_s * 1000)))
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise StoreUnavailableError(f"redis: {exc}") from exc

    async def record_outcomes(
        self, provider: str, outcomes: Sequence[Outcome], now: float
    ) -> tuple[CircuitRecord, list[Transition]]:
        try:
            raw = await CIRCUIT.run(
                self._redis, [self.key(provider, "circuit")], self._circuit_args(now, outcomes)
            )
        except (RedisError, OSError) as exc:
            raise StoreUnavailableError(f"redis: {exc}") from exc
        return circuit_from_json(raw)

    async def load(self, providers: Sequence[str], now: float) -> Loaded:
        loaded: Loaded = {}
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for name in providers:
                    pipe.lrange(self.key(name, "probes"), 0, -1)
                    pipe.hgetall(self.key(name, "admin"))
                replies = await pipe.execute()
            for index, name in enumerate(providers):
                probes, admin = replies[2 * index], replies[2 * index + 1]
                # Zero outcomes: the script only brings the circuit up to now.
                record, transitions = await self.record_outcomes(name, (), now)
                loaded[name] = (
                    SharedState(
                        probes=tuple(ProbeResult.from_json(p) for p in probes),
                        circuit=record,
                        admin=_admin(admin),
                    ),
                    transitions,
                )
        except (RedisError, OSError) as exc:
            raise StoreUnavailableError(f"redis: {exc}") from exc
        return loaded

    async def set_maintenance(self, provider: str, maintenance: bool, reason: str) -> None:
        key = self.key(provider, "admin")
        try:
            if maintenance:
                await self._redis.hset(
                    key, mapping={"maintenance": "1", "maintenance_reason": reason}
                )
            else:
                await self._redis.hdel(key, "maintenance", "maintenance_reason")
        except (RedisError, OSError) as exc:
            raise StoreUnavailableError(f"redis: {exc}") from exc

    async def set_disabled(self, provider: str, reason: str) -> None:
        key = self.key(provider, "admin")
        try:
            if reason:
                await self._redis.hset(key, "disabled_reason", reason)
            else:
                await self._redis.hdel(key, "disabled_reason")
        except (RedisError, OSError) as exc:
            raise StoreUnavailableError(f"redis: {exc}") from exc

    async def ping(self) -> None:
        try:
            await self._redis.ping()
        except (RedisError, OSError) as exc:
            raise StoreUnavailableError(f"redis: {exc}") from exc

    async def aclose(self) -> None:
        await self._redis.aclose()


def _admin(raw: dict[Any, Any]) -> AdminRecord:
    fields = {_text(k): _text(v) for k, v in raw.items()}
    return AdminRecord(
        maintenance=fields.get("maintenance") == "1",
        maintenance_reason=fields.get("maintenance_reason", ""),
        disabled_reason=fields.get("disabled_reason", ""),
    )
