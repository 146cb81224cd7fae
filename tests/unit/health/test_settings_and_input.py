"""Configuration of the health service, and validation of reported outcomes."""

from __future__ import annotations

import pytest
from google.protobuf import duration_pb2

from llmproxy._gen.health.v1 import health_pb2
from llmproxy.common.errors import ConfigError
from llmproxy.config import DEFAULT_CONFIG, load_config
from llmproxy.health.errors import InvalidRequestError
from llmproxy.health.server import check_probe_settings
from llmproxy.health.service import parse_outcomes
from llmproxy.health.settings import HealthSettings


def test_defaults_detect_within_five_seconds_and_cost_no_tokens() -> None:
    settings = HealthSettings()
    probe = settings.probe
    # Worst case: the outage starts just after a probe; two probes must fail, each started an
    # interval apart and each taking at most the timeout.
    assert probe.interval_s + (probe.unhealthy_after - 1) * probe.interval_s + probe.timeout_s < 5
    assert settings.probe_for("anything").mode == "models"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "LLMPROXY__SERVICES__HEALTH__PROVIDER_PROBES",
            "services.health.provider_probes.openai: "
            "Value error, a 'completion' probe needs `model`",
        ),
        (
            "LLMPROXY__SERVICES__HEALTH__PROBE__TIMEOUT_S",
            "probe.degraded_latency_s must not exceed",
        ),
        ("LLMPROXY__SERVICES__HEALTH__CIRCUIT__ERROR_RATE", "services.health.circuit.error_rate"),
    ],
)
def test_bad_settings_are_named(override: str, message: str) -> None:
    values = {
        "LLMPROXY__SERVICES__HEALTH__PROVIDER_PROBES": '{"openai": {"mode": "completion"}}',
        "LLMPROXY__SERVICES__HEALTH__PROBE__TIMEOUT_S": "0.5",
        "LLMPROXY__SERVICES__HEALTH__CIRCUIT__ERROR_RATE": "2",
    }
    with pytest.raises(ConfigError) as raised:
        load_config(DEFAULT_CONFIG, environ={override: values[override]})
    assert message in str(raised.value)


def test_a_completion_probe_is_configured_per_provider() -> None:
    config = load_config(
        DEFAULT_CONFIG,
        environ={
            "LLMPROXY__SERVICES__HEALTH__PROVIDER_PROBES": (
                '{"openai": {"mode": "completion", "model": "gpt-4o-mini"}}'
            )
        },
    )
    check_probe_settings(config)  # a configured provider: accepted
    how = config.services.health.probe_for("openai")
    assert (how.mode, how.model) == ("completion", "gpt-4o-mini")
    assert config.services.health.probe_for("groq").mode == "models"


def test_probe_settings_of_an_unknown_provider_stop_startup() -> None:
    config = load_config(
        DEFAULT_CONFIG, environ={"LLMPROXY__SERVICES__HEALTH__PROVIDER_PROBES": '{"opnai": {}}'}
    )
    # A ConfigError: run_service turns it into exit status 2 with this message.
    with pytest.raises(ConfigError, match=r"provider_probes names unknown providers \['opnai'\]"):
        check_probe_settings(config)


def outcome(**fields: object) -> health_pb2.CallOutcome:
    defaults: dict[str, object] = {"provider": "a", "ok": True, "status_code": 200}
    return health_pb2.CallOutcome(**{**defaults, **fields})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (outcome(provider=""), "outcomes[1].provider is required"),
        (outcome(status_code=700), "outcomes[1].status_code must be an HTTP status"),
        (outcome(status_code=-1), "outcomes[1].status_code must be an HTTP status"),
        (
            outcome(latency=duration_pb2.Duration(seconds=-1)),
            "outcomes[1].latency must not be negative",
        ),
    ],
)
def test_bad_outcomes_are_named(bad: health_pb2.CallOutcome, message: str) -> None:
    request = health_pb2.ReportOutcomesRequest(outcomes=[outcome(), bad])
    with pytest.raises(InvalidRequestError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_outcomes(request)


def test_too_many_outcomes_are_refused() -> None:
    request = health_pb2.ReportOutcomesRequest(outcomes=[outcome()] * 10_001)
    with pytest.raises(InvalidRequestError, match="at most 10000 per call, got 10001"):
        parse_outcomes(request)


def test_good_outcomes_parse() -> None:
    request = health_pb2.ReportOutcomesRequest(
        outcomes=[
            outcome(latency=duration_pb2.Duration(nanos=250_000_000)),
            outcome(ok=False, status_code=0),
        ]
    )
    parsed = parse_outcomes(request)
    assert [(name, o.ok, o.status, o.latency_s) for name, o in parsed] == [
        ("a", True, 200, 0.25),
        ("a", False, 0, 0.0),
    ]
