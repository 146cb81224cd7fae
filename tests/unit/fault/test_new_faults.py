"""kill_instance and redis_unavailable: their validation, and the kill's share of the fleet."""

from __future__ import annotations

from typing import Any

import pytest

from llmproxy._gen.fault.v1 import fault_pb2
from llmproxy.fault.errors import WrongStateError
from llmproxy.fault.kill import check_share
from llmproxy.fault.validation import validate
from tests.unit.fault.test_validation import KNOWN, NOW, refused, request

KILL = fault_pb2.Fault(kill_instance=fault_pb2.KillInstanceFault())
PAUSE = fault_pb2.Fault(redis_unavailable=fault_pb2.RedisUnavailableFault())
CRITICAL: dict[str, Any] = {"severity": fault_pb2.SEVERITY_CRITICAL, "confirm_critical": True}


def test_kill_instance_takes_a_known_service() -> None:
    kill = request(target=fault_pb2.Target(service="router"), faults=[KILL])
    assert validate(kill, KNOWN, NOW).faults[0].HasField("kill_instance")
    assert "target.service: unknown service 'nope' (known: authz, router)" in refused(
        request(target=fault_pb2.Target(service="nope"), faults=[KILL])
    )
    assert "faults[0].kill_instance: a route target takes only" in refused(request(faults=[KILL]))


def test_redis_unavailable_is_critical_only_and_bounded() -> None:
    redis = fault_pb2.Target(dependency="redis")
    assert validate(request(target=redis, faults=[PAUSE], **CRITICAL), KNOWN, NOW)
    high = request(target=redis, faults=[PAUSE], severity=fault_pb2.SEVERITY_HIGH)
    assert (
        "faults[0].redis_unavailable: an unavailable Redis reaches every request (100%), over "
        "the HIGH severity cap of 50%" in refused(high)
    )
    long = request(target=redis, faults=[PAUSE], **CRITICAL)
    long.duration.seconds = 301
    assert "duration: 301 s is over the longest Redis outage" in refused(long)
    assert "target.dependency: unknown dependency 'postgres'" in refused(
        request(target=fault_pb2.Target(dependency="postgres"), faults=[PAUSE], **CRITICAL)
    )
    assert "faults[0].redis_unavailable: a service target takes only" in refused(
        request(target=fault_pb2.Target(service="router"), faults=[PAUSE], **CRITICAL)
    )


@pytest.mark.parametrize(
    ("healthy", "severity", "message"),
    [
        (0, fault_pb2.SEVERITY_CRITICAL, "no healthy instance of router is registered"),
        (1, fault_pb2.SEVERITY_HIGH, "router has 1 healthy instance; killing the last one needs"),
        (2, fault_pb2.SEVERITY_MEDIUM, "killing 1 of the 2 healthy router instances is 50%, over"),
        (9, fault_pb2.SEVERITY_LOW, "is 11.1111%, over the LOW severity cap of 10%"),
    ],
)
def test_a_kill_over_the_cap_is_refused_naming_the_field(
    healthy: int, severity: int, message: str
) -> None:
    with pytest.raises(WrongStateError) as caught:
        check_share("faults[0].kill_instance", "router", healthy, severity)
    assert str(caught.value).startswith("faults[0].kill_instance: ")
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("healthy", "severity"),
    [
        (1, fault_pb2.SEVERITY_CRITICAL),
        (2, fault_pb2.SEVERITY_HIGH),
        (4, fault_pb2.SEVERITY_MEDIUM),
        (10, fault_pb2.SEVERITY_LOW),
    ],
)
def test_a_kill_within_the_cap_is_allowed(healthy: int, severity: int) -> None:
    check_share("faults[0].kill_instance", "router", healthy, severity)
