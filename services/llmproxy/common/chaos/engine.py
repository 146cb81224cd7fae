"""Which stress each experiment holds, within which bounds, and its undoing at expiry.

The agent undoes every stress itself when its duration ends (a timer thread per stress), so a
stress never outlives its experiment even when the fault service that applied it was killed.
Thread-safe: RPCs run it from worker threads, timers from their own.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import Gauge

from llmproxy.common.chaos.errors import InvalidStress, OverBudget
from llmproxy.common.chaos.workers import CpuBurner, MemoryHog, Worker, available_megabytes

STRESS_ACTIVE = Gauge(
    "llmproxy_chaos_stress_active", "Chaos agent stresses in effect, by kind.", ["kind"]
)


@dataclass(frozen=True)
class StressLimits:
    """Hard caps of the agent: per stress, and for all stresses in effect together."""

    max_cores: float = 1.0
    max_megabytes: int = 1024
    max_duration_s: float = 3600.0
    max_share_of_available_memory: float = 0.5
    """A memory stress never takes more than this share of the machine's available memory."""


@dataclass(frozen=True)
class CpuStress:
    """Burn `cores` of one core."""

    cores: float
    kind = "cpu"


@dataclass(frozen=True)
class MemoryStress:
    """Hold `megabytes` MiB."""

    megabytes: int
    kind = "memory"


Stress = CpuStress | MemoryStress


@dataclass(frozen=True)
class ActiveStress:
    """A stress in effect for an experiment, until `deadline` (time.monotonic())."""

    experiment: str
    stress: Stress
    deadline: float

    def remaining_s(self, now: float) -> float:
        """Seconds left at `now`, never negative."""
        return max(0.0, self.deadline - now)


def start_worker(stress: Stress) -> Worker:
    """Start the real worker for a stress."""
    if isinstance(stress, CpuStress):
        return CpuBurner(stress.cores)
    return MemoryHog(stress.megabytes)


@dataclass
class _Held:
    active: ActiveStress
    worker: Worker
    timer: threading.Timer


class StressEngine:
    """Applies, lists and undoes stresses: at most one per experiment, all within the limits."""

    def __init__(
        self,
        limits: StressLimits | None = None,
        start: Callable[[Stress], Worker] = start_worker,
        available_mb: Callable[[], int | None] = available_megabytes,
    ) -> None:
        self.limits = limits or StressLimits()
        self._start = start
        self._available_mb = available_mb
        self._lock = threading.Lock()
        self._held: dict[str, _Held] = {}

    def check(self, stress: Stress, duration_s: float) -> None:
        """Raise InvalidStress, naming the field and the cap, when one stress is out of bounds."""
        limits = self.limits
        if not (math.isfinite(duration_s) and 0 < duration_s <= limits.max_duration_s):
            raise InvalidStress(
                f"duration must be > 0 s and <= {limits.max_duration_s:g} s "
                f"(the agent's cap), got {duration_s:g} s"
            )
        if isinstance(stress, CpuStress):
            if not (math.isfinite(stress.cores) and 0 < stress.cores <= limits.max_cores):
                raise InvalidStress(
                    f"cpu.cores must be > 0 and <= {limits.max_cores:g} "
                    f"(the agent's cap), got {stress.cores:g}"
                )
        elif not 0 < stress.megabytes <= limits.max_megabytes:
            raise InvalidStress(
                f"memory.megabytes must be > 0 and <= {limits.max_megabytes} "
                f"(the agent's cap), got {stress.megabytes}"
            )

    def apply(
        self, experiment: str, stress: Stress, duration_s: float
    ) -> tuple[ActiveStress, bool]:
        """Start a stress for experiment, replacing its previous one; returns it and whether
        it replaced one.

        Nothing changes when it is refused. If the new stress fails to start after the old one
        was undone (the operating system refused memory), the experiment holds none.
        """
        self.check(stress, duration_s)
        with self._lock:
            self._check_budget(experiment, stress)
            previous = self._held.pop(experiment, None)
            if previous is not None:
                self._undo(previous)
            try:
                worker = self._start(stress)
            except (MemoryError, OSError) as exc:
                raise OverBudget(f"could not allocate the {stress.kind} stress: {exc}") from exc
            active = ActiveStress(experiment, stress, time.monotonic() + duration_s)
            timer = threading.Timer(duration_s, self._expire, (active,))
            timer.daemon = True
            self._held[experiment] = _Held(active, worker, timer)
            STRESS_ACTIVE.labels(stress.kind).inc()
            timer.start()
        return active, previous is not None

    def _check_budget(self, experiment: str, stress: Stress) -> None:
        others = [h.active.stress for name, h in self._held.items() if name != experiment]
        limits = self.limits
        if isinstance(stress, CpuStress):
            used = sum(s.cores for s in others if isinstance(s, CpuStress))
            if used + stress.cores > limits.max_cores + 1e-9:
                raise OverBudget(
                    f"cpu.cores {stress.cores:g} with {used:g} held by other experiments "
                    f"passes the agent's cap of {limits.max_cores:g} cores"
                )
            return
        used_mb = sum(s.megabytes for s in others if isinstance(s, MemoryStress))
        if used_mb + stress.megabytes > limits.max_megabytes:
            raise OverBudget(
                f"memory.megabytes {stress.megabytes} with {used_mb} held by other experiments "
                f"passes the agent's cap of {limits.max_megabytes} MB"
            )
        available = self._available_mb()
        if available is not None:
            allowed = int(available * limits.max_share_of_available_memory)
            if stress.megabytes > allowed:
                raise OverBudget(
                    f"memory.megabytes {stress.megabytes} is more than "
                    f"{limits.max_share_of_available_memory:.0%} of the machine's available "
                    f"{available} MB"
                )

    def clear(self, experiment: str = "") -> list[ActiveStress]:
        """Undo the stress of experiment, or every stress when it is empty; returns them."""
        with self._lock:
            names = [experiment] if experiment else sorted(self._held)
            cleared = [self._held.pop(name) for name in names if name in self._held]
            for held in cleared:
                self._undo(held)
        return [held.active for held in cleared]

    def active(self) -> list[ActiveStress]:
        """The stresses in effect, by experiment name."""
        with self._lock:
            return [self._held[name].active for name in sorted(self._held)]

    async def close(self) -> None:
        """Undo everything: the service is shutting down."""
        self.clear()

    def _expire(self, active: ActiveStress) -> None:
        with self._lock:
            held = self._held.get(active.experiment)
            # A replaced stress's timer may fire just as it is replaced: only undo our own.
            if held is None or held.active is not active:
                return
            del self._held[active.experiment]
            self._undo(held)

    @staticmethod
    def _undo(held: _Held) -> None:
        held.timer.cancel()
        held.worker.stop()
        STRESS_ACTIVE.labels(held.active.stress.kind).dec()
