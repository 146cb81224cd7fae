"""Fakes for the health service's unit tests: a scripted prober and a failing store."""

from __future__ import annotations

import time
from collections.abc import Sequence

from llmproxy.common.settings import ProviderSettings
from llmproxy.health.errors import StoreUnavailableError
from llmproxy.health.records import CircuitRecord, Outcome, ProbeResult, Transition
from llmproxy.health.settings import ProviderProbeSettings
from llmproxy.health.store import Loaded


class ScriptedProber:
    """Answers each provider's probes from its `up` flag; counts calls."""

    def __init__(self) -> None:
        self.up: dict[str, bool] = {}
        self.calls: list[str] = []

    async def probe(self, provider: ProviderSettings, how: ProviderProbeSettings) -> ProbeResult:
        self.calls.append(provider.name)
        ok = self.up.get(provider.name, True)
        detail = "2 models listed" if ok else "HTTP 503: down"
        return ProbeResult(ok, 200 if ok else 503, 0.01, detail, time.time(), how.mode, "fake")


class BrokenStore:
    """A HealthStore whose every call fails, as Redis does when it is down."""

    def __init__(self) -> None:
        self.broken = True
        self.calls = 0

    def _check(self) -> None:
        self.calls += 1
        if self.broken:
            raise StoreUnavailableError("redis: connection refused")

    async def try_lock_probe(self, provider: str, ttl_s: float, owner: str) -> bool:
        self._check()
        return True

    async def add_probe(self, provider: str, result: ProbeResult, keep: int, ttl_s: float) -> None:
        self._check()

    async def record_outcomes(
        self, provider: str, outcomes: Sequence[Outcome], now: float
    ) -> tuple[CircuitRecord, list[Transition]]:
        self._check()
        return CircuitRecord(), []

    async def load(self, providers: Sequence[str], now: float) -> Loaded:
        self._check()
        return {}

    async def set_maintenance(self, provider: str, maintenance: bool, reason: str) -> None:
        self._check()

    async def set_disabled(self, provider: str, reason: str) -> None:
        self._check()

    async def ping(self) -> None:
        self._check()

    async def aclose(self) -> None:
        return None
