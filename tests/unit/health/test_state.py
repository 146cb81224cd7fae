"""A provider's state from probes, circuit and admin flags, with reasons and hysteresis."""

from __future__ import annotations

from llmproxy.common.settings import ProviderSettings
from llmproxy.health.records import AdminRecord, CircuitRecord, ProbeResult, SharedState
from llmproxy.health.settings import HealthSettings
from llmproxy.health.state import evaluate, probes_down

PROVIDER = ProviderSettings(name="p", base_url="http://127.0.0.1:9/v1")
SETTINGS = HealthSettings()
NOW = 1_000.0


def ok(latency_s: float = 0.05, rate_limited: bool = False) -> ProbeResult:
    status = 429 if rate_limited else 200
    return ProbeResult(True, status, latency_s, "models listed", NOW, rate_limited=rate_limited)


def fail(detail: str = "HTTP 503: down") -> ProbeResult:
    return ProbeResult(False, 503, 0.01, detail, NOW)


def state_of(*probes: ProbeResult, **shared: object) -> tuple[str, str, bool]:
    status = evaluate(PROVIDER, SharedState(probes=probes, **shared), SETTINGS, NOW)  # type: ignore[arg-type]
    return status.state, status.reason, status.available


def test_not_probed_yet_is_unspecified_and_available() -> None:
    assert state_of() == ("unspecified", "not probed yet", True)


def test_passing_probes_are_healthy() -> None:
    assert state_of(ok(), ok()) == ("healthy", "probes pass", True)


def test_one_failed_probe_degrades_two_make_it_unhealthy() -> None:
    assert state_of(fail(), ok()) == ("degraded", "last probe failed: HTTP 503: down", True)
    assert state_of(fail(), fail(), ok()) == (
        "unhealthy",
        "probes failing: HTTP 503: down",
        False,
    )


def test_recovery_needs_two_passing_probes_in_a_row() -> None:
    assert state_of(ok(), fail(), fail()) == (
        "unhealthy",
        "recovering: fewer than 2 probes passed in a row",
        False,
    )
    assert state_of(ok(), fail(), ok(), fail(), fail())[0] == "unhealthy"
    assert state_of(ok(), ok(), fail(), fail())[0] == "healthy"


def test_hysteresis_replays_oldest_first() -> None:
    newest_first = [ok(), fail(), fail(), ok(), ok()]
    assert probes_down(newest_first, unhealthy_after=2, healthy_after=2)
    assert not probes_down(newest_first, unhealthy_after=3, healthy_after=2)
    assert not probes_down(newest_first, unhealthy_after=2, healthy_after=1)


def test_slow_or_rate_limited_probes_degrade() -> None:
    assert state_of(ok(latency_s=1.2)) == (
        "degraded",
        "slow: the last probe took over 1 s",
        True,
    )
    assert state_of(ok(rate_limited=True)) == (
        "degraded",
        "rate limited: the probe was answered 429",
        True,
    )


def test_open_circuit_is_unhealthy_half_open_is_degraded() -> None:
    opened = CircuitRecord("open", NOW - 1, 5, 0, "5 failed calls in a row")
    state, reason, available = state_of(ok(), circuit=opened)
    assert (state, reason, available) == (
        "unhealthy",
        "circuit open: 5 failed calls in a row",
        False,
    )
    # The open period (3 s) ends: half-open, trial calls allowed.
    expired = CircuitRecord("open", NOW - 3, 5, 0, "5 failed calls in a row")
    status = evaluate(PROVIDER, SharedState((ok(),), expired), SETTINGS, NOW)
    assert (status.state, status.circuit, status.available) == ("degraded", "half_open", True)
    assert status.reason == "circuit half-open: trial calls decide"
    assert status.trial_calls == SETTINGS.circuit.half_open_calls


def test_a_high_error_rate_below_the_open_threshold_degrades() -> None:
    slice_index = int(NOW // 3)  # 30 s window in 10 slices
    window = CircuitRecord(buckets={slice_index: (20, 4)})
    status = evaluate(PROVIDER, SharedState((ok(),), window), SETTINGS, NOW)
    assert (status.state, status.available) == ("degraded", True)
    assert status.reason == "calls failing: error rate at or above 10%"
    assert (status.window_calls, status.error_rate) == (20, 0.2)


def test_maintenance_keeps_the_state_but_makes_it_unavailable() -> None:
    admin = AdminRecord(maintenance=True, maintenance_reason="quota review")
    status = evaluate(PROVIDER, SharedState((ok(),), admin=admin), SETTINGS, NOW)
    assert (status.state, status.maintenance, status.available) == ("healthy", True, False)
    assert status.maintenance_reason == "quota review"


def test_a_provider_not_enabled_is_unhealthy_whatever_else() -> None:
    admin = AdminRecord(disabled_reason="startup probe failed: HTTP 401: bad key")
    status = evaluate(PROVIDER, SharedState((ok(),), admin=admin), SETTINGS, NOW)
    assert (status.state, status.enabled, status.available) == ("unhealthy", False, False)
    assert status.reason == "not enabled: startup probe failed: HTTP 401: bad key"


def test_changed_at_moves_only_when_something_worth_telling_changes() -> None:
    first = evaluate(PROVIDER, SharedState((ok(),)), SETTINGS, NOW).stamped(None, 1.0)
    again = evaluate(PROVIDER, SharedState((ok(0.2), ok())), SETTINGS, NOW).stamped(first, 2.0)
    assert again.changed_at == 1.0
    worse = evaluate(PROVIDER, SharedState((fail(), ok())), SETTINGS, NOW).stamped(again, 3.0)
    assert worse.changed_at == 3.0
