"""The runtime resource is a pure function of the running experiments."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from llmproxy._gen.fault.v1 import fault_pb2
from llmproxy.common.contract import RTDS_RESOURCE
from llmproxy.fault.runtime import build_runtime, runtime_keys
from llmproxy.fault.severity import CAPS

STATES = [
    fault_pb2.EXPERIMENT_STATE_PENDING,
    fault_pb2.EXPERIMENT_STATE_RUNNING,
    fault_pb2.EXPERIMENT_STATE_COMPLETED,
    fault_pb2.EXPERIMENT_STATE_ROLLED_BACK,
    fault_pb2.EXPERIMENT_STATE_STOPPED,
]


@st.composite
def experiments(draw: st.DrawFn) -> fault_pb2.Experiment:
    severity = draw(st.sampled_from(sorted(CAPS)))
    cap = int(CAPS[severity].max_percent)
    percent = st.integers(1, cap)
    kind = draw(st.sampled_from(["route", "provider", "tenant", "service"]))
    name = draw(st.sampled_from(["chat", "embeddings", "models", "demo", "acme", "router"]))
    faults = []
    if kind == "service":
        faults.append(fault_pb2.Fault(cpu=fault_pb2.CpuFault(cores=draw(percent) / 100)))
    else:
        if draw(st.booleans()):
            faults.append(
                fault_pb2.Fault(
                    latency=fault_pb2.LatencyFault(percent=draw(percent), fixed_delay_ms=100)
                )
            )
        if draw(st.booleans()) or not faults:
            faults.append(
                fault_pb2.Fault(abort=fault_pb2.AbortFault(percent=draw(percent), http_status=503))
            )
    return fault_pb2.Experiment(
        name=draw(st.text("abcdef", min_size=1, max_size=6)),
        state=draw(st.sampled_from(STATES)),
        severity=severity,  # type: ignore[arg-type]
        target=fault_pb2.Target(**{kind: name}),
        faults=faults,
    )


@given(st.lists(experiments(), max_size=6))
def test_keys_only_for_running_experiments_and_within_caps(
    found: list[fault_pb2.Experiment],
) -> None:
    keys = runtime_keys(found)
    running = [e for e in found if e.state == fault_pb2.EXPERIMENT_STATE_RUNNING]
    allowed = {
        k for e in running if e.target.WhichOneof("kind") != "service" for k in runtime_keys([e])
    }
    assert set(keys) <= allowed
    top = max((CAPS[e.severity].max_percent for e in running), default=0)
    for key, value in keys.items():
        if key.endswith("_percent"):
            assert 0 < value <= top
    resource = build_runtime(found)
    assert resource.name == RTDS_RESOURCE
    assert set(resource.layer.fields) == set(keys)


@given(st.lists(experiments(), max_size=6))
def test_nothing_running_gives_an_empty_layer(found: list[fault_pb2.Experiment]) -> None:
    for experiment in found:
        if experiment.state == fault_pb2.EXPERIMENT_STATE_RUNNING:
            experiment.state = fault_pb2.EXPERIMENT_STATE_STOPPED
    assert len(build_runtime(found).layer.fields) == 0


def test_keys_per_target_kind() -> None:
    def running(target: fault_pb2.Target, *faults: fault_pb2.Fault) -> fault_pb2.Experiment:
        return fault_pb2.Experiment(
            name=str(target), state=fault_pb2.EXPERIMENT_STATE_RUNNING, target=target, faults=faults
        )

    latency = fault_pb2.Fault(latency=fault_pb2.LatencyFault(percent=30, fixed_delay_ms=250))
    http = fault_pb2.Fault(abort=fault_pb2.AbortFault(percent=40, http_status=502))
    grpc_abort = fault_pb2.Fault(abort=fault_pb2.AbortFault(percent=20, grpc_status=14))
    bandwidth = fault_pb2.Fault(bandwidth=fault_pb2.BandwidthFault(percent=10))
    keys = runtime_keys(
        [
            running(fault_pb2.Target(route="chat"), latency, grpc_abort, bandwidth),
            running(fault_pb2.Target(provider="demo"), http),
            running(fault_pb2.Target(tenant="acme"), latency),
        ]
    )
    assert keys == {
        "fault.route.chat.delay.fixed_delay_percent": 30,
        "fault.route.chat.delay.fixed_duration_ms": 250,
        "fault.route.chat.grpc_abort.abort_percent": 20,
        "fault.route.chat.abort.grpc_status": 14,
        "fault.route.chat.rate_limit.response_percent": 10,
        "fault.provider.demo.abort.abort_percent": 40,
        "fault.provider.demo.abort.http_status": 502,
        "fault.http.tenant-acme.delay.fixed_delay_percent": 30,
        "fault.http.tenant-acme.delay.fixed_duration_ms": 250,
    }


def test_a_shared_key_takes_the_larger_percentage() -> None:
    def abort(name: str, percent: int) -> fault_pb2.Experiment:
        return fault_pb2.Experiment(
            name=name,
            state=fault_pb2.EXPERIMENT_STATE_RUNNING,
            target=fault_pb2.Target(route="chat"),
            faults=[fault_pb2.Fault(abort=fault_pb2.AbortFault(percent=percent, http_status=503))],
        )

    keys = runtime_keys([abort("b", 10), abort("a", 25)])
    assert keys["fault.route.chat.abort.abort_percent"] == 25
