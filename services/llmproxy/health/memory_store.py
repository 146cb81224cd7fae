"""HealthStore in this process's memory: the fallback while Redis is down, and the unit tests'.

The same contract as the Redis store, for one instance: the probe lock only coordinates this
instance's own loops, and nothing is shared.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from llmproxy.health import circuit
from llmproxy.health.records import (
    AdminRecord,
    CircuitRecord,
    Outcome,
    ProbeResult,
    SharedState,
    Transition,
)
from llmproxy.health.settings import CircuitSettings
from llmproxy.health.store import Loaded


@dataclass
class _Provider:
    probes: list[ProbeResult] = field(default_factory=list)
    probes_expire_at: float = 0.0
    circuit: CircuitRecord = field(default_factory=CircuitRecord)
    admin: AdminRecord = field(default_factory=AdminRecord)
    lock_until: float = 0.0


class MemoryHealthStore:
    """HealthStore in a dict; clock is monotonic seconds (for locks and expiry)."""

    def __init__(
        self, settings: CircuitSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._providers: dict[str, _Provider] = {}

    def _get(self, provider: str) -> _Provider:
        return self._providers.setdefault(provider, _Provider())

    def seed(self, provider: str, shared: SharedState) -> None:
        """Take over shared state read elsewhere (from Redis, before it went away)."""
        entry = self._get(provider)
        entry.probes = list(shared.probes)
        entry.probes_expire_at = float("inf")
        entry.circuit = shared.circuit
        entry.admin = shared.admin

    async def try_lock_probe(self, provider: str, ttl_s: float, owner: str) -> bool:
        entry = self._get(provider)
        now = self._clock()
        if now < entry.lock_until:
            return False
        entry.lock_until = now + ttl_s
        return True

    async def add_probe(self, provider: str, result: ProbeResult, keep: int, ttl_s: float) -> None:
        entry = self._get(provider)
        entry.probes = [result, *self._live_probes(entry)][:keep]
        entry.probes_expire_at = self._clock() + ttl_s

    def _live_probes(self, entry: _Provider) -> list[ProbeResult]:
        return entry.probes if self._clock() < entry.probes_expire_at else []

    async def record_outcomes(
        self, provider: str, outcomes: Sequence[Outcome], now: float
    ) -> tuple[CircuitRecord, list[Transition]]:
        entry = self._get(provider)
        entry.circuit, transitions = circuit.apply(entry.circuit, outcomes, self._settings, now)
        return entry.circuit, transitions

    async def load(self, providers: Sequence[str], now: float) -> Loaded:
        loaded: Loaded = {}
        for name in providers:
            record, transitions = await self.record_outcomes(name, (), now)
            entry = self._get(name)
            loaded[name] = (
                SharedState(tuple(self._live_probes(entry)), record, entry.admin),
                transitions,
            )
        return loaded

    async def set_maintenance(self, provider: str, maintenance: bool, reason: str) -> None:
        entry = self._get(provider)
        entry.admin = replace(
            entry.admin, maintenance=maintenance, maintenance_reason=reason if maintenance else ""
        )

    async def set_disabled(self, provider: str, reason: str) -> None:
        entry = self._get(provider)
        entry.admin = replace(entry.admin, disabled_reason=reason)

    async def ping(self) -> None:
        return None

    async def aclose(self) -> None:
        return None
