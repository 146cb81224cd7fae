"""Envoy's runtime resource for the running experiments: a pure function of them.

Each running experiment's Envoy faults become runtime keys under its target's prefix (see
envoyconf/fault for the key names). Percentages are whole numbers: Envoy reads a runtime
FractionalPercent from the text form of its Struct, which newer protobuf prints in a form Envoy
cannot parse back, so only plain integers work (seen with Envoy 1.40). No running experiment
gives an empty layer: Envoy's fault filters then fall back to their 0% defaults. Two running
experiments setting the same key (the controller prevents it, this function does not rely on
it) resolve deterministically: the larger percentage, and otherwise the value of the experiment
whose name sorts last.
"""

from __future__ import annotations

from collections.abc import Iterable

from envoy.service.runtime.v3 import rtds_pb2
from google.protobuf import struct_pb2

from llmproxy._gen.fault.v1 import fault_pb2
from llmproxy.common.contract import (
    RTDS_RESOURCE,
    provider_fault_prefix,
    route_fault_prefix,
    tenant_fault_prefix,
)

TYPE_URL = "type.googleapis.com/envoy.service.runtime.v3.Runtime"
PERCENT_SUFFIXES = ("_percent",)


def key_prefix(target: fault_pb2.Target) -> str | None:
    """The runtime key prefix of a target's Envoy faults; None for a service target."""
    kind = target.WhichOneof("kind")
    if kind == "route":
        return route_fault_prefix(target.route)
    if kind == "provider":
        return provider_fault_prefix(target.provider)
    if kind == "tenant":
        return tenant_fault_prefix(target.tenant)
    return None


def fault_keys(experiment: fault_pb2.Experiment) -> dict[str, int]:
    """The runtime keys one experiment sets, by name."""
    prefix = key_prefix(experiment.target)
    if prefix is None:
        return {}
    keys: dict[str, int] = {}
    for fault in experiment.faults:
        kind = fault.WhichOneof("kind")
        if kind == "latency":
            keys[f"{prefix}delay.fixed_delay_percent"] = fault.latency.percent
            keys[f"{prefix}delay.fixed_duration_ms"] = fault.latency.fixed_delay_ms
        elif kind == "abort" and fault.abort.WhichOneof("status") == "grpc_status":
            keys[f"{prefix}grpc_abort.abort_percent"] = fault.abort.percent
            keys[f"{prefix}abort.grpc_status"] = fault.abort.grpc_status
        elif kind == "abort":
            keys[f"{prefix}abort.abort_percent"] = fault.abort.percent
            keys[f"{prefix}abort.http_status"] = fault.abort.http_status
        elif kind == "bandwidth":
            keys[f"{prefix}rate_limit.response_percent"] = fault.bandwidth.percent
    return keys


def runtime_keys(experiments: Iterable[fault_pb2.Experiment]) -> dict[str, int]:
    """Every key the running experiments set, percentages in whole percent (0..100)."""
    merged: dict[str, int] = {}
    running = [e for e in experiments if e.state == fault_pb2.EXPERIMENT_STATE_RUNNING]
    for experiment in sorted(running, key=lambda e: e.name):
        for key, value in fault_keys(experiment).items():
            if key.endswith(PERCENT_SUFFIXES) and key in merged:
                merged[key] = max(merged[key], int(value))
            else:
                merged[key] = int(value)
    return merged


def build_runtime(experiments: Iterable[fault_pb2.Experiment]) -> rtds_pb2.Runtime:
    """The `llmproxy_faults` runtime resource for the running experiments among experiments."""
    layer = struct_pb2.Struct()
    for key, value in sorted(runtime_keys(experiments).items()):
        layer[key] = value
    return rtds_pb2.Runtime(name=RTDS_RESOURCE, layer=layer)
