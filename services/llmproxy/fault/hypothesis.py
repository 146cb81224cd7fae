"""The steady-state hypothesis of an experiment, judged from two traffic samples (pure).

A window is the traffic between two samples of Envoy's cumulative counters. Too little traffic
in it, or counters that went backwards (Envoy restarted in between), is no evidence either way:
the verdict is ok, so an experiment is never rolled back on noise, and its reason says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from llmproxy.fault.envoy_stats import TrafficSample

Breach = Literal["success_ratio", "latency_p99"]


@dataclass(frozen=True)
class SteadyState:
    """What normal looks like: bounds that an experiment must not push the traffic past."""

    min_success_ratio: float | None
    """Lowest acceptable share of non-5xx responses in the window (0..1); None: not checked."""
    max_p99_ms: float | None
    """Highest acceptable p99 of downstream request time, in ms; None: not checked."""
    min_requests: int = 20
    """Fewer requests than this in the window is not enough evidence: the verdict is ok."""


@dataclass(frozen=True)
class Verdict:
    """Whether the steady state held over a window, the observed values and why."""

    ok: bool
    success_ratio: float | None
    p99_ms: float | None
    reason: str
    breach: Breach | None


def judge(state: SteadyState, before: TrafficSample, now: TrafficSample) -> Verdict:
    """Judge the window between two samples of the same Envoy against the steady state."""
    requests = now.requests - before.requests
    successes = now.successes - before.successes
    p99 = now.p99_ms
    if requests < 0 or successes < 0 or successes > requests:
        return Verdict(True, None, p99, "counters went backwards (Envoy restarted?)", None)
    if requests < state.min_requests:
        return Verdict(
            True,
            None,
            p99,
            f"not enough evidence: {requests} requests < {state.min_requests}",
            None,
        )
    ratio = successes / requests
    if state.min_success_ratio is not None and ratio < state.min_success_ratio:
        return Verdict(
            False,
            ratio,
            p99,
            f"success ratio {ratio:.3f} < {state.min_success_ratio} over {requests} requests",
            "success_ratio",
        )
    if state.max_p99_ms is not None and p99 is not None and p99 > state.max_p99_ms:
        return Verdict(
            False,
            ratio,
            p99,
            f"p99 latency {p99:.1f} ms > {state.max_p99_ms} ms over {requests} requests",
            "latency_p99",
        )
    latency = "no p99 yet" if p99 is None else f"p99 {p99:.1f} ms"
    return Verdict(
        True, ratio, p99, f"success ratio {ratio:.3f}, {latency} over {requests} requests", None
    )
