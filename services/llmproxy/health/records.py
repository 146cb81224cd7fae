"""The values the health service reasons about: probe results, call outcomes, circuits.

Plain frozen dataclasses with JSON forms, shared by the stores (Redis and memory), the pure
evaluation in `state` and the servicer's conversion to protobuf.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Circuit = Literal["closed", "open", "half_open"]


@dataclass(frozen=True)
class ProbeResult:
    """One active probe: did the provider answer correctly, and how fast."""

    ok: bool
    status: int
    """The HTTP status, 0 when no answer came."""
    latency_s: float
    detail: str
    at: float
    """Wall-clock time (Unix seconds) the probe finished."""
    mode: str = "models"
    instance: str = ""
    rate_limited: bool = False
    """The provider answered 429: it is up, but throttled."""

    def to_json(self) -> str:
        """The result as stored in Redis."""
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> ProbeResult:
        """A result read back from Redis; unknown fields (a newer writer) are ignored."""
        data: dict[str, Any] = json.loads(raw)
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class Outcome:
    """The outcome of one real call to a provider, as a router reported it."""

    ok: bool
    status: int = 0
    latency_s: float = 0.0
    probe: bool = False
    """A probe result standing in as a trial call while the circuit is half-open."""

    def code(self) -> str:
        """The compact form the Lua script reads: ok, fail, pok or pfail."""
        return ("p" if self.probe else "") + ("ok" if self.ok else "fail")


@dataclass(frozen=True)
class CircuitRecord:
    """A provider's circuit breaker and the window of call outcomes it decides on."""

    state: Circuit = "closed"
    opened_at: float = 0.0
    consecutive_failures: int = 0
    trial_successes: int = 0
    reason: str = ""
    buckets: dict[int, tuple[int, int]] = field(default_factory=dict)
    """Per time slice (index = floor(now / slice length)): (calls, failures)."""

    def window(self, now: float, slice_s: float, slices: int) -> tuple[int, int]:
        """(calls, failures) over the last slices slices up to now."""
        current = int(now // slice_s)
        calls = failures = 0
        for index, (n, failed) in self.buckets.items():
            if current - slices < index <= current:
                calls += n
                failures += failed
        return calls, failures


@dataclass(frozen=True)
class Transition:
    """One change of a circuit's state, and why."""

    before: Circuit
    after: Circuit
    reason: str


@dataclass(frozen=True)
class AdminRecord:
    """What operators (and the startup probe) decided about a provider."""

    maintenance: bool = False
    maintenance_reason: str = ""
    disabled_reason: str = ""
    """Non-empty when the startup probe failed: the provider is not enabled."""


@dataclass(frozen=True)
class SharedState:
    """Everything the fleet of health instances shares about one provider."""

    probes: tuple[ProbeResult, ...] = ()
    """Newest first."""
    circuit: CircuitRecord = field(default_factory=CircuitRecord)
    admin: AdminRecord = field(default_factory=AdminRecord)
