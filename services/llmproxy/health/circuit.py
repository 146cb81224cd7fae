"""The circuit breaker of one provider, as a pure function of its record, outcomes and time.

closed ── consecutive failures, or error rate over the window ──> open
open ── open_s elapsed ──> half_open (the change is applied lazily, by whoever looks next)
half_open ── close_after successful trials ──> closed;  one failed trial ──> open

While closed only real calls count (probes have their own thresholds); while half-open a probe
counts as a trial too, so that a provider nobody calls still gets its circuit closed. While open
outcomes are ignored: they are the calls made anyway when every target was unavailable.

`circuit.lua` is the same machine, applied atomically in Redis; tests hold the two to the same
answers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

from llmproxy.health.records import Circuit, CircuitRecord, Outcome, Transition
from llmproxy.health.settings import CircuitSettings


def slice_s(settings: CircuitSettings) -> float:
    """Length of one time slice of the error-rate window."""
    return settings.window_s / settings.buckets


def slice_index(now: float, settings: CircuitSettings) -> int:
    """The time slice now falls in (the same arithmetic as the Lua script's)."""
    return math.floor(now / slice_s(settings))


def advance(
    record: CircuitRecord, settings: CircuitSettings, now: float
) -> tuple[CircuitRecord, list[Transition]]:
    """The record at time now: an open circuit whose time is up is half-open."""
    if record.state == "open" and now >= record.opened_at + settings.open_s:
        reason = f"open for {settings.open_s:g} s: trial calls allowed"
        return (
            replace(record, state="half_open", trial_successes=0, reason=reason),
            [Transition("open", "half_open", reason)],
        )
    return record, []


def _prune(
    record: CircuitRecord, current: int, settings: CircuitSettings
) -> dict[int, tuple[int, int]]:
    return {
        index: counts
        for index, counts in record.buckets.items()
        if current - settings.buckets < index <= current
    }


def apply(
    record: CircuitRecord, outcomes: Sequence[Outcome], settings: CircuitSettings, now: float
) -> tuple[CircuitRecord, list[Transition]]:
    """The record after outcomes (oldest first) at time now, and the transitions they caused."""
    record, transitions = advance(record, settings, now)
    current = slice_index(now, settings)
    buckets = _prune(record, current, settings)
    state: Circuit = record.state
    opened_at = record.opened_at
    consecutive = record.consecutive_failures
    trials = record.trial_successes
    reason = record.reason

    def move(to: Circuit, why: str) -> None:
        nonlocal state, reason
        transitions.append(Transition(state, to, why))
        state, reason = to, why

    for outcome in outcomes:
        if state == "closed":
            if outcome.probe:
                continue
            calls, failures = buckets.get(current, (0, 0))
            buckets[current] = (calls + 1, failures + (0 if outcome.ok else 1))
            consecutive = 0 if outcome.ok else consecutive + 1
            in_window = sum(n for n, _ in buckets.values())
            failed = sum(f for _, f in buckets.values())
            if consecutive >= settings.consecutive_failures:
                opened_at = now
                move("open", f"{consecutive} failed calls in a row")
            elif in_window >= settings.min_calls and failed >= settings.error_rate * in_window:
                opened_at = now
                move("open", f"{failed} of {in_window} calls failed in {settings.window_s:g} s")
        elif state == "half_open":
            if outcome.ok:
                trials += 1
                if trials >= settings.close_after:
                    consecutive, trials, buckets = 0, 0, {}
                    move("closed", f"{settings.close_after} trials succeeded")
            else:
                opened_at, trials = now, 0
                move("open", "a trial probe failed" if outcome.probe else "a trial call failed")
    return (
        CircuitRecord(state, opened_at, consecutive, trials, reason, buckets),
        transitions,
    )
