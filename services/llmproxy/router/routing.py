"""Which of a model's targets a request tries first: the model's routing strategy.

Every strategy returns all of the model's targets, the first one to try first and the others as
fallbacks; Failover then skips the ones the health view holds back, exactly as for `ordered`.

- `ordered`: the configured order, unchanged (no work at all).
- `weighted`: a weighted draw without replacement, so the first target is drawn by weight and,
  when it is unavailable, the next available one still is; targets of weight 0 come last.
- `least-latency`: fastest first. The health service's probe latencies when it has a recent one
  for every target (one yardstick for all); otherwise this router's own moving average of each
  target's calls, where a target without a recent average comes first so that it is measured.
- `least-busy`: fewest calls in flight from this router instance first; ties keep the
  configured order.

`TargetLoad` keeps what the last two need, per target (provider and upstream model): calls in
flight, counted for every model's calls (streams until they end), and the moving average of how
long calls took until their answer began. Only targets some least-latency or least-busy model
has are counted, so a stack that routes in order pays nothing for it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Protocol

from llmproxy.router.settings import ModelSettings, ModelTarget, Routing, RoutingSettings

TargetKey = tuple[str, str]
"""A target as TargetLoad knows it: (provider, upstream model)."""


def target_key(target: ModelTarget) -> TargetKey:
    """The key TargetLoad counts target under."""
    return (target.provider, target.model)


MEASURED: frozenset[Routing] = frozenset({"least-latency", "least-busy"})
"""The routings that order by TargetLoad."""


def measured_targets(models: Iterable[ModelSettings]) -> frozenset[TargetKey]:
    """The targets TargetLoad must count: those of models whose routing orders by it."""
    return frozenset(target_key(t) for m in models if m.routing in MEASURED for t in m.targets)


class LatencySource(Protocol):
    """Measured latency per provider from elsewhere (the health view)."""

    def latency_s(self, provider: str, max_age_s: float) -> float | None:
        """The provider's latency measured within max_age_s, or None when there is none."""


class TargetLoad:
    """Calls in flight and a moving average of latency per target, in this router instance."""

    def __init__(
        self, settings: RoutingSettings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._alpha = settings.latency_ewma_alpha
        self._max_age_s = settings.latency_max_age_s
        self._clock = clock
        self._in_flight: dict[TargetKey, int] = {}
        self._latency: dict[TargetKey, tuple[float, float]] = {}  # (average, when last seen)

    def start(self, key: TargetKey) -> None:
        """A call to key begins."""
        self._in_flight[key] = self._in_flight.get(key, 0) + 1

    def end(self, key: TargetKey) -> None:
        """A call to key is over (its stream too)."""
        left = self._in_flight.get(key, 0) - 1
        if left > 0:
            self._in_flight[key] = left
        else:
            self._in_flight.pop(key, None)

    def in_flight(self, key: TargetKey) -> int:
        """Calls to key in flight now."""
        return self._in_flight.get(key, 0)

    def observe(self, key: TargetKey, seconds: float, ok: bool) -> None:
        """Fold one call's latency into key's average.

        A failed call can only make a target look slower: a timeout is a slow answer, but a
        refused connection is not a fast one.
        """
        now = self._clock()
        known = self._latency.get(key)
        if known is None or now - known[1] > self._max_age_s:
            average = seconds  # nothing recent to blend with: start over
        else:
            average = known[0] + self._alpha * (seconds - known[0])
        if not ok and known is not None:
            average = max(average, known[0])
        self._latency[key] = (average, now)

    def latency_s(self, key: TargetKey) -> float | None:
        """key's average latency, or None when it has none from the last latency_max_age_s."""
        known = self._latency.get(key)
        if known is None or self._clock() - known[1] > self._max_age_s:
            return None
        return known[0]


class Balancer:
    """Orders a model's targets for one request by the model's routing."""

    def __init__(
        self,
        settings: RoutingSettings,
        load: TargetLoad | None = None,
        health: LatencySource | None = None,
        rng: random.Random | None = None,
        measured: Collection[TargetKey] | None = None,
    ) -> None:
        self._max_age_s = settings.latency_max_age_s
        self.load = load or TargetLoad(settings)
        self._measured = measured
        self._health = health
        self._rng = rng or random.Random()  # noqa: S311 - spreading load, not secrecy

    def measures(self, key: TargetKey) -> bool:
        """Whether calls to key are counted in load (all of them when not told which)."""
        return self._measured is None or key in self._measured

    def order(self, routing: Routing, targets: Sequence[ModelTarget]) -> Sequence[ModelTarget]:
        """targets in the order to try them: the first one first, the rest as fallbacks."""
        if routing == "ordered" or len(targets) < 2:
            return targets
        if routing == "weighted":
            return self._weighted(targets)
        if routing == "least-latency":
            return self._least_latency(targets)
        return sorted(targets, key=lambda t: self.load.in_flight(target_key(t)))

    def _weighted(self, targets: Sequence[ModelTarget]) -> list[ModelTarget]:
        left = [t for t in targets if t.weight is None or t.weight > 0]
        weights = [1.0 if t.weight is None else t.weight for t in left]
        drawn: list[ModelTarget] = []
        while left:
            point = self._rng.random() * sum(weights)
            index = 0
            while index < len(left) - 1 and point >= weights[index]:
                point -= weights[index]
                index += 1
            drawn.append(left.pop(index))
            weights.pop(index)
        drawn.extend(t for t in targets if t.weight == 0)
        return drawn

    def _least_latency(self, targets: Sequence[ModelTarget]) -> list[ModelTarget]:
        if self._health is not None:
            probed = [self._health.latency_s(t.provider, self._max_age_s) for t in targets]
            known = [s for s in probed if s is not None]
            if len(known) == len(targets):
                return [targets[i] for i in sorted(range(len(targets)), key=known.__getitem__)]
        # Unmeasured targets first (False sorts before True), the measured ones fastest first.
        return sorted(targets, key=self._own_latency)

    def _own_latency(self, target: ModelTarget) -> tuple[bool, float]:
        seconds = self.load.latency_s(target_key(target))
        return (seconds is not None, seconds or 0.0)
