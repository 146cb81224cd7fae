"""The steady-state judge: breaches, thresholds, and no verdict on thin or reset evidence."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmproxy.fault.envoy_stats import TrafficSample
from llmproxy.fault.hypothesis import SteadyState, judge

STRICT = SteadyState(min_success_ratio=0.95, max_p99_ms=500.0, min_requests=20)


def sample(requests: int, successes: int, p99_ms: float | None = None) -> TrafficSample:
    return TrafficSample(taken_at=0.0, requests=requests, successes=successes, p99_ms=p99_ms)


def test_low_success_ratio_is_a_breach_that_says_why() -> None:
    verdict = judge(STRICT, sample(1000, 990), sample(1140, 990 + 115, p99_ms=80.0))
    assert not verdict.ok
    assert verdict.breach == "success_ratio"
    assert verdict.success_ratio == pytest.approx(115 / 140)
    assert verdict.reason == "success ratio 0.821 < 0.95 over 140 requests"


def test_high_p99_is_a_latency_breach() -> None:
    verdict = judge(STRICT, sample(0, 0), sample(100, 100, p99_ms=812.5))
    assert not verdict.ok
    assert verdict.breach == "latency_p99"
    assert verdict.p99_ms == 812.5
    assert verdict.reason == "p99 latency 812.5 ms > 500.0 ms over 100 requests"


def test_success_ratio_is_checked_before_latency() -> None:
    verdict = judge(STRICT, sample(0, 0), sample(100, 50, p99_ms=9000.0))
    assert verdict.breach == "success_ratio"


def test_healthy_window_is_ok_with_the_observed_values() -> None:
    verdict = judge(STRICT, sample(10, 10), sample(110, 106, p99_ms=42.0))
    assert verdict.ok
    assert verdict.breach is None
    assert verdict.success_ratio == pytest.approx(0.96)
    assert verdict.reason == "success ratio 0.960, p99 42.0 ms over 100 requests"


def test_ratio_exactly_at_the_bound_holds() -> None:
    assert judge(STRICT, sample(0, 0), sample(100, 95)).ok


def test_unset_bounds_are_not_checked() -> None:
    lenient = SteadyState(min_success_ratio=None, max_p99_ms=None)
    verdict = judge(lenient, sample(0, 0), sample(100, 0, p99_ms=1e6))
    assert verdict.ok
    assert verdict.success_ratio == 0.0


def test_missing_p99_cannot_breach_latency() -> None:
    verdict = judge(STRICT, sample(0, 0), sample(100, 100, p99_ms=None))
    assert verdict.ok
    assert verdict.reason == "success ratio 1.000, no p99 yet over 100 requests"


def test_too_few_requests_is_no_evidence() -> None:
    verdict = judge(STRICT, sample(50, 50), sample(69, 50, p99_ms=9000.0))
    assert verdict.ok
    assert verdict.success_ratio is None
    assert verdict.reason == "not enough evidence: 19 requests < 20"


def test_counter_reset_is_no_evidence() -> None:
    verdict = judge(STRICT, sample(5000, 4990), sample(30, 0))
    assert verdict.ok
    assert verdict.breach is None
    assert verdict.success_ratio is None
    assert "restarted" in verdict.reason


counts = st.integers(min_value=0, max_value=10**9)
ratios = st.none() | st.floats(min_value=0.0, max_value=1.0)
latencies = st.none() | st.floats(min_value=0.0, max_value=1e6, allow_nan=False)


@st.composite
def samples(draw: st.DrawFn) -> TrafficSample:
    requests = draw(counts)
    successes = draw(st.integers(min_value=0, max_value=requests))
    return sample(requests, successes, draw(latencies))


# No deadline: the machine is shared and its timing noisy; these are about values only.
@settings(deadline=None)
@given(
    state=st.builds(SteadyState, ratios, latencies, st.integers(min_value=1, max_value=1000)),
    before=samples(),
    now=samples(),
)
def test_any_pair_of_samples_gives_a_consistent_verdict(
    state: SteadyState, before: TrafficSample, now: TrafficSample
) -> None:
    verdict = judge(state, before, now)
    assert verdict.reason
    assert verdict.ok == (verdict.breach is None)
    if verdict.success_ratio is not None:
        assert 0.0 <= verdict.success_ratio <= 1.0
    went_back = now.requests < before.requests or now.successes < before.successes
    if went_back or now.requests - before.requests < state.min_requests:
        assert verdict.ok
        assert verdict.success_ratio is None
    if verdict.breach == "success_ratio":
        assert state.min_success_ratio is not None
        assert verdict.success_ratio is not None
        assert verdict.success_ratio < state.min_success_ratio
    if verdict.breach == "latency_p99":
        assert state.max_p99_ms is not None
        assert now.p99_ms is not None
        assert now.p99_ms > state.max_p99_ms


@settings(deadline=None)
@given(before=samples(), extra=counts, failed=counts)
def test_more_failures_never_turn_a_breach_into_a_pass(
    before: TrafficSample, extra: int, failed: int
) -> None:
    failed = min(failed, extra)
    worse = sample(before.requests + extra, before.successes + extra - failed)
    better = sample(before.requests + extra, before.successes + extra - failed // 2)
    if not judge(STRICT, before, better).ok:
        assert not judge(STRICT, before, worse).ok
