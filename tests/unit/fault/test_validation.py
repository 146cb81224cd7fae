"""CreateExperiment input: caps by severity, known names, clear messages naming the field."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import duration_pb2, timestamp_pb2
from pydantic import ValidationError

from llmproxy._gen.fault.v1 import fault_pb2
from llmproxy.fault.errors import InvalidExperimentError
from llmproxy.fault.settings import FaultSettings
from llmproxy.fault.validation import Known, validate

KNOWN = Known(
    routes=("chat", "embeddings", "models"),
    providers=("primary", "secondary"),
    services=("router", "authz"),
    bandwidth_kbps=64,
)
NOW = timestamp_pb2.Timestamp(seconds=1_800_000_000)


def request(**fields: Any) -> fault_pb2.CreateExperimentRequest:
    base: dict[str, Any] = {
        "name": "exp-1",
        "target": fault_pb2.Target(route="chat"),
        "faults": [fault_pb2.Fault(abort=fault_pb2.AbortFault(percent=10, http_status=503))],
        "severity": fault_pb2.SEVERITY_LOW,
        "duration": duration_pb2.Duration(seconds=60),
    }
    base.update(fields)
    return fault_pb2.CreateExperimentRequest(**base)


def refused(req: fault_pb2.CreateExperimentRequest) -> str:
    with pytest.raises(InvalidExperimentError) as caught:
        validate(req, KNOWN, NOW)
    return str(caught.value)


def test_a_valid_request_becomes_a_pending_experiment() -> None:
    experiment = validate(request(), KNOWN, NOW)
    assert experiment.state == fault_pb2.EXPERIMENT_STATE_PENDING
    assert experiment.created_at == NOW
    assert experiment.target.route == "chat"


@pytest.mark.parametrize(
    ("severity", "percent", "minutes", "message"),
    [
        (fault_pb2.SEVERITY_LOW, 11, 1, "over the LOW severity cap of 10%"),
        (fault_pb2.SEVERITY_MEDIUM, 26, 1, "over the MEDIUM severity cap of 25%"),
        (fault_pb2.SEVERITY_HIGH, 51, 1, "over the HIGH severity cap of 50%"),
        (fault_pb2.SEVERITY_LOW, 10, 6, "duration: 360 s is over the LOW severity cap of 300 s"),
        (fault_pb2.SEVERITY_MEDIUM, 25, 16, "over the MEDIUM severity cap of 900 s"),
        (fault_pb2.SEVERITY_HIGH, 50, 31, "over the HIGH severity cap of 1800 s"),
    ],
)
def test_severity_caps(severity: int, percent: int, minutes: int, message: str) -> None:
    req = request(
        severity=severity,
        duration=duration_pb2.Duration(seconds=minutes * 60),
        faults=[fault_pb2.Fault(abort=fault_pb2.AbortFault(percent=percent, http_status=503))],
    )
    assert message in refused(req)


def test_caps_allow_their_limit_and_critical_needs_confirmation() -> None:
    at_cap = [fault_pb2.Fault(abort=fault_pb2.AbortFault(percent=100, http_status=503))]
    critical = request(
        severity=fault_pb2.SEVERITY_CRITICAL,
        faults=at_cap,
        duration=duration_pb2.Duration(seconds=3600),
    )
    assert "confirm_critical" in refused(critical)
    critical.confirm_critical = True
    assert validate(critical, KNOWN, NOW).severity == fault_pb2.SEVERITY_CRITICAL
    over = request(severity=fault_pb2.SEVERITY_CRITICAL, confirm_critical=True, faults=at_cap)
    over.duration.seconds = 3601
    assert "CRITICAL severity cap of 3600 s" in refused(over)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (fault_pb2.Target(route="chats"), "target.route: unknown route 'chats'"),
        (fault_pb2.Target(provider="nope"), "target.provider: unknown provider 'nope'"),
        (fault_pb2.Target(service="db"), "target.service: unknown service 'db'"),
        (fault_pb2.Target(tenant="bad tenant!"), "target.tenant:"),
        (fault_pb2.Target(), "target: set one of"),
    ],
)
def test_unknown_targets_are_refused(target: fault_pb2.Target, message: str) -> None:
    assert message in refused(request(target=target))


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": ""}, "name:"),
        ({"name": "has space"}, "name:"),
        ({"severity": fault_pb2.SEVERITY_UNSPECIFIED}, "severity:"),
        ({"faults": []}, "faults: give at least one fault"),
        ({"duration": duration_pb2.Duration()}, "duration: must be above 0"),
        ({"faults": [fault_pb2.Fault()]}, "faults[0]: set one of"),
        (
            {"faults": [fault_pb2.Fault(abort=fault_pb2.AbortFault(percent=5))]},
            "faults[0].abort: set http_status or grpc_status",
        ),
        (
            {"faults": [fault_pb2.Fault(abort=fault_pb2.AbortFault(percent=5, http_status=99))]},
            "faults[0].abort.http_status: 99",
        ),
        (
            {"faults": [fault_pb2.Fault(abort=fault_pb2.AbortFault(percent=5, grpc_status=17))]},
            "faults[0].abort.grpc_status: 17",
        ),
        (
            {"faults": [fault_pb2.Fault(latency=fault_pb2.LatencyFault(percent=5))]},
            "faults[0].latency.fixed_delay_ms",
        ),
        (
            {"faults": [fault_pb2.Fault(bandwidth=fault_pb2.BandwidthFault(percent=5, kbps=9))]},
            "faults[0].bandwidth.kbps: Envoy's limit is fixed at 64",
        ),
        (
            {"faults": [fault_pb2.Fault(cpu=fault_pb2.CpuFault(cores=0.5))]},
            "faults[0].cpu: a route target takes only abort, bandwidth, latency faults",
        ),
        (
            {
                "faults": [
                    fault_pb2.Fault(abort=fault_pb2.AbortFault(percent=5, http_status=503)),
                    fault_pb2.Fault(abort=fault_pb2.AbortFault(percent=5, grpc_status=14)),
                ]
            },
            "at most one fault of each kind (repeated: abort)",
        ),
        ({"interval": duration_pb2.Duration(seconds=600)}, "interval: needs start_time"),
        (
            {
                "start_time": NOW,
                "interval": duration_pb2.Duration(seconds=30),
            },
            "interval: must be longer than duration",
        ),
        (
            {"hypothesis": fault_pb2.SteadyStateHypothesis(min_success_ratio=1.5)},
            "hypothesis.min_success_ratio",
        ),
    ],
)
def test_bad_fields_are_named(fields: dict[str, Any], message: str) -> None:
    assert message in refused(request(**fields))


def test_what_each_target_accepts() -> None:
    grpc_abort = fault_pb2.Fault(abort=fault_pb2.AbortFault(percent=5, grpc_status=14))
    assert "only routes with gRPC clients (chat, embeddings) abort with a gRPC status" in refused(
        request(target=fault_pb2.Target(provider="primary"), faults=[grpc_abort])
    )
    assert "grpc_status: only routes with gRPC clients" in refused(
        request(target=fault_pb2.Target(route="models"), faults=[grpc_abort])
    )
    bandwidth = fault_pb2.Fault(bandwidth=fault_pb2.BandwidthFault(percent=5))
    assert "a tenant target takes only abort, latency" in refused(
        request(target=fault_pb2.Target(tenant="acme"), faults=[bandwidth])
    )
    cpu = fault_pb2.Fault(cpu=fault_pb2.CpuFault(cores=0.2))
    assert "over the LOW severity cap of 10%" in refused(
        request(target=fault_pb2.Target(service="router"), faults=[cpu])
    )
    cpu.cpu.cores = 0.1
    memory = fault_pb2.Fault(memory=fault_pb2.MemoryFault(megabytes=64))
    assert validate(
        request(target=fault_pb2.Target(service="router"), faults=[cpu, memory]), KNOWN, NOW
    )


def test_heartbeat_must_be_below_the_ttl() -> None:
    with pytest.raises(ValidationError, match="rtds_heartbeat_s"):
        FaultSettings(rtds_ttl_s=2, rtds_heartbeat_s=2)
    assert FaultSettings(rtds_ttl_s=2, rtds_heartbeat_s=0.5).rtds_ttl_s == 2
