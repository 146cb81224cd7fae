"""The circuit breaker state machine: opening, the open period, half-open trials, closing."""

from __future__ import annotations

import pytest

from llmproxy.health import circuit
from llmproxy.health.records import CircuitRecord, Outcome
from llmproxy.health.settings import CircuitSettings

SETTINGS = CircuitSettings(
    consecutive_failures=3, error_rate=0.5, window_s=10, buckets=10, min_calls=6, open_s=5
)
OK, FAIL = Outcome(ok=True), Outcome(ok=False)
PROBE_OK, PROBE_FAIL = Outcome(ok=True, probe=True), Outcome(ok=False, probe=True)


def run(record: CircuitRecord, outcomes: list[Outcome], now: float) -> CircuitRecord:
    return circuit.apply(record, outcomes, SETTINGS, now)[0]


def test_consecutive_failures_open_the_circuit() -> None:
    record, transitions = circuit.apply(CircuitRecord(), [FAIL, FAIL], SETTINGS, 100.0)
    assert record.state == "closed"
    assert record.consecutive_failures == 2
    assert not transitions
    record, transitions = circuit.apply(record, [FAIL], SETTINGS, 100.5)
    assert record.state == "open"
    assert record.opened_at == 100.5
    assert [(t.before, t.after, t.reason) for t in transitions] == [
        ("closed", "open", "3 failed calls in a row")
    ]


def test_a_success_resets_the_run_of_failures() -> None:
    record = run(CircuitRecord(), [FAIL, FAIL, OK, FAIL, FAIL], 100.0)
    assert record.state == "closed"
    assert record.consecutive_failures == 2


def test_error_rate_over_the_window_opens_the_circuit() -> None:
    # Never three failures in a row, but half of six calls failed.
    record, transitions = circuit.apply(
        CircuitRecord(), [FAIL, OK, FAIL, OK, FAIL, OK], SETTINGS, 100.0
    )
    assert record.state == "open"
    assert transitions[0].reason == "3 of 6 calls failed in 10 s"


def test_error_rate_needs_min_calls() -> None:
    record = run(CircuitRecord(), [FAIL, OK, FAIL, OK], 100.0)
    assert record.state == "closed"
    assert record.window(100.0, circuit.slice_s(SETTINGS), SETTINGS.buckets) == (4, 2)


def test_old_outcomes_leave_the_window() -> None:
    record = run(CircuitRecord(), [FAIL, OK, FAIL, OK], 100.0)
    # 10 s later the first slice is out of the window: its failures no longer count.
    record = run(record, [FAIL, OK], 110.5)
    assert record.window(110.5, circuit.slice_s(SETTINGS), SETTINGS.buckets) == (2, 1)
    assert record.state == "closed"


def test_probes_do_not_count_while_closed() -> None:
    record = run(CircuitRecord(), [PROBE_FAIL] * 10, 100.0)
    assert record.state == "closed"
    assert record.consecutive_failures == 0


def test_open_ignores_outcomes_then_turns_half_open() -> None:
    opened = run(CircuitRecord(), [FAIL] * 3, 100.0)
    still = run(opened, [OK, OK, FAIL], 104.0)
    assert still.state == "open"
    assert still.opened_at == 100.0
    record, transitions = circuit.advance(still, SETTINGS, 105.0)
    assert record.state == "half_open"
    assert [(t.before, t.after) for t in transitions] == [("open", "half_open")]


def test_half_open_closes_after_enough_trials_probes_included() -> None:
    half = circuit.advance(run(CircuitRecord(), [FAIL] * 3, 100.0), SETTINGS, 105.0)[0]
    record = run(half, [OK], 105.1)
    assert record.state == "half_open"
    record, transitions = circuit.apply(record, [PROBE_OK], SETTINGS, 105.2)
    assert record.state == "closed"
    assert transitions[-1].reason == "2 trials succeeded"
    # A fresh start: the failures that opened it are forgotten.
    assert record.window(105.2, circuit.slice_s(SETTINGS), SETTINGS.buckets) == (0, 0)
    assert record.consecutive_failures == 0


@pytest.mark.parametrize(
    ("trial", "reason"), [(FAIL, "a trial call failed"), (PROBE_FAIL, "a trial probe failed")]
)
def test_a_failed_trial_opens_it_again(trial: Outcome, reason: str) -> None:
    half = circuit.advance(run(CircuitRecord(), [FAIL] * 3, 100.0), SETTINGS, 105.0)[0]
    record, transitions = circuit.apply(half, [OK, trial], SETTINGS, 106.0)
    assert record.state == "open"
    assert record.opened_at == 106.0
    assert transitions[-1].reason == reason
    assert circuit.advance(record, SETTINGS, 110.9)[0].state == "open"
    assert circuit.advance(record, SETTINGS, 111.0)[0].state == "half_open"


def test_lazy_transition_happens_inside_apply_too() -> None:
    opened = run(CircuitRecord(), [FAIL] * 3, 100.0)
    record, transitions = circuit.apply(opened, [OK, OK], SETTINGS, 200.0)
    assert record.state == "closed"
    assert [(t.before, t.after) for t in transitions] == [
        ("open", "half_open"),
        ("half_open", "closed"),
    ]
