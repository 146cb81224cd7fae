"""Checks a CreateExperimentRequest and turns it into a PENDING Experiment (pure).

Every refusal is an InvalidExperimentError whose message names the field and, for a cap, the
severity's limit. What each target accepts follows from how Envoy applies it (envoyconf/fault):
routes take latency, abort (HTTP status, or gRPC status on the routes gRPC clients use) and
bandwidth; providers and tenants take
latency and HTTP aborts (providers also bandwidth: Envoy has no per-tenant bandwidth key);
services take cpu and memory, through their chaos agent, and kill_instance (whose share of the
service's healthy instances is checked against the cap when it starts, see kill.py); the
dependency `redis` takes redis_unavailable, which reaches every request (100%: CRITICAL only).
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection
from dataclasses import dataclass

from google.protobuf import timestamp_pb2

from llmproxy._gen.fault.v1 import fault_pb2
from llmproxy.common.contract import TENANT_PATTERN
from llmproxy.fault.errors import InvalidExperimentError
from llmproxy.fault.severity import CAPS, severity_name

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MAX_DELAY_MS = 60_000
MAX_MEMORY_MB = 1024
DEFAULT_MIN_REQUESTS = 20
MAX_REDIS_UNAVAILABLE_S = 300.0
"""The longest Redis outage an experiment may cause, whatever its severity."""
FAULT_NAMES = "latency, abort, bandwidth, cpu, memory, kill_instance or redis_unavailable"

_ALLOWED = {
    "route": {"latency", "abort", "bandwidth"},
    "provider": {"latency", "abort", "bandwidth"},
    "tenant": {"latency", "abort"},
    "service": {"cpu", "memory", "kill_instance"},
    "dependency": {"redis_unavailable"},
}


@dataclass(frozen=True)
class Known:
    """The names targets may use, from the configuration."""

    routes: Collection[str]
    providers: Collection[str]
    services: Collection[str]
    bandwidth_kbps: int
    grpc_routes: Collection[str] = ("chat", "embeddings")
    """Routes with methods gRPC clients call: the only ones a gRPC-status abort reaches."""
    dependencies: Collection[str] = ("redis",)
    redis_cluster: bool = False
    """A Redis Cluster cannot be paused as one (CLIENT PAUSE is per node)."""


def _bad(message: str) -> InvalidExperimentError:
    return InvalidExperimentError(message)


def _check_target(target: fault_pb2.Target, known: Known) -> str:
    kind = target.WhichOneof("kind")
    if kind is None:
        raise _bad("target: set one of route, provider, service, tenant or dependency")
    value = getattr(target, kind)
    names: Collection[str] | None = {
        "route": known.routes,
        "provider": known.providers,
        "service": known.services,
        "dependency": known.dependencies,
    }.get(kind)
    if names is not None and value not in names:
        listed = ", ".join(sorted(names)) or "none"
        raise _bad(f"target.{kind}: unknown {kind} {value!r} (known: {listed})")
    if kind == "tenant" and not TENANT_PATTERN.match(value):
        raise _bad(f"target.tenant: {value[:70]!r} is not a tenant name")
    return kind


def _check_percent(field: str, percent: float, severity: int) -> None:
    cap = CAPS[severity].max_percent
    if not math.isfinite(percent) or percent <= 0 or percent > 100:
        raise _bad(f"{field}: {percent:g} must be above 0 and at most 100")
    if percent > cap:
        raise _bad(
            f"{field}: {percent:g}% is over the {severity_name(severity)} severity cap of {cap:g}%"
        )


def _check_fault(
    index: int, fault: fault_pb2.Fault, target: fault_pb2.Target, severity: int, known: Known
) -> str:
    target_kind = target.WhichOneof("kind") or ""
    kind = fault.WhichOneof("kind")
    field = f"faults[{index}]"
    if kind is None:
        raise _bad(f"{field}: set one of {FAULT_NAMES}")
    if kind not in _ALLOWED[target_kind]:
        allowed = ", ".join(sorted(_ALLOWED[target_kind]))
        raise _bad(f"{field}.{kind}: a {target_kind} target takes only {allowed} faults")
    field = f"{field}.{kind}"
    if kind == "latency":
        _check_percent(f"{field}.percent", fault.latency.percent, severity)
        if not 0 < fault.latency.fixed_delay_ms <= MAX_DELAY_MS:
            raise _bad(f"{field}.fixed_delay_ms: must be 1 to {MAX_DELAY_MS}")
    elif kind == "abort":
        _check_abort(field, fault.abort, target, severity, known)
    elif kind == "bandwidth":
        _check_percent(f"{field}.percent", fault.bandwidth.percent, severity)
        if fault.bandwidth.kbps not in (0, known.bandwidth_kbps):
            raise _bad(
                f"{field}.kbps: Envoy's limit is fixed at {known.bandwidth_kbps} "
                "(services.fault.bandwidth_kbps); give 0 or that value"
            )
    elif kind == "cpu":
        cores = fault.cpu.cores
        if not math.isfinite(cores) or not 0 < cores <= 1:
            raise _bad(f"{field}.cores: {cores} must be above 0 and at most 1 (one core)")
        _check_percent(f"{field}.cores", cores * 100, severity)
    elif kind == "memory" and not 0 < fault.memory.megabytes <= MAX_MEMORY_MB:
        raise _bad(f"{field}.megabytes: must be 1 to {MAX_MEMORY_MB}")
    elif kind == "redis_unavailable":
        _check_redis_unavailable(field, severity, known)
    return kind


def _check_redis_unavailable(field: str, severity: int, known: Known) -> None:
    if known.redis_cluster:
        raise _bad(f"{field}: a Redis Cluster cannot be paused as a whole (redis.cluster is true)")
    cap = CAPS[severity].max_percent
    if cap < 100:
        raise _bad(
            f"{field}: an unavailable Redis reaches every request (100%), over the "
            f"{severity_name(severity)} severity cap of {cap:g}%: use CRITICAL with "
            "confirm_critical"
        )


def _check_abort(
    field: str, abort: fault_pb2.AbortFault, target: fault_pb2.Target, severity: int, known: Known
) -> None:
    _check_percent(f"{field}.percent", abort.percent, severity)
    status = abort.WhichOneof("status")
    if status is None:
        raise _bad(f"{field}: set http_status or grpc_status")
    if status == "http_status" and not 200 <= abort.http_status <= 599:
        raise _bad(f"{field}.http_status: {abort.http_status} is not an HTTP status (200-599)")
    if status == "grpc_status":
        if target.WhichOneof("kind") != "route" or target.route not in known.grpc_routes:
            routes = ", ".join(sorted(known.grpc_routes))
            raise _bad(
                f"{field}.grpc_status: only routes with gRPC clients ({routes}) abort with a "
                "gRPC status; use http_status"
            )
        if not 1 <= abort.grpc_status <= 16:
            raise _bad(f"{field}.grpc_status: {abort.grpc_status} is not a gRPC error code (1-16)")


def _check_hypothesis(hypothesis: fault_pb2.SteadyStateHypothesis) -> None:
    if hypothesis.HasField("min_success_ratio") and not (0 <= hypothesis.min_success_ratio <= 1):
        raise _bad("hypothesis.min_success_ratio: must be between 0 and 1")
    if hypothesis.HasField("max_p99_ms") and not (
        math.isfinite(hypothesis.max_p99_ms) and hypothesis.max_p99_ms > 0
    ):
        raise _bad("hypothesis.max_p99_ms: must be above 0")


def _check_schedule(request: fault_pb2.CreateExperimentRequest, duration_s: float) -> None:
    if request.HasField("interval"):
        if not request.HasField("start_time"):
            raise _bad("interval: needs start_time")
        if request.interval.ToTimedelta().total_seconds() <= duration_s:
            raise _bad("interval: must be longer than duration")


def validate(
    request: fault_pb2.CreateExperimentRequest, known: Known, now: timestamp_pb2.Timestamp
) -> fault_pb2.Experiment:
    """The experiment request describes, PENDING, or InvalidExperimentError."""
    if not NAME_PATTERN.match(request.name):
        raise _bad(
            f"name: {request.name[:70]!r} must be 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    severity = request.severity
    if severity not in CAPS:
        raise _bad("severity: set LOW, MEDIUM, HIGH or CRITICAL")
    if severity == fault_pb2.SEVERITY_CRITICAL and not request.confirm_critical:
        raise _bad("confirm_critical: a CRITICAL experiment needs confirm_critical: true")
    _check_target(request.target, known)
    if not request.faults:
        raise _bad("faults: give at least one fault")
    kinds = [
        _check_fault(i, f, request.target, severity, known) for i, f in enumerate(request.faults)
    ]
    duplicates = sorted({k for k in kinds if kinds.count(k) > 1})
    if duplicates:
        raise _bad(f"faults: at most one fault of each kind (repeated: {', '.join(duplicates)})")
    duration_s = request.duration.ToTimedelta().total_seconds()
    cap = CAPS[severity].max_duration_s
    if duration_s <= 0:
        raise _bad("duration: must be above 0")
    if duration_s > cap:
        raise _bad(
            f"duration: {duration_s:g} s is over the {severity_name(severity)} severity cap "
            f"of {cap:g} s"
        )
    if "redis_unavailable" in kinds and duration_s > MAX_REDIS_UNAVAILABLE_S:
        raise _bad(
            f"duration: {duration_s:g} s is over the longest Redis outage an experiment may "
            f"cause, {MAX_REDIS_UNAVAILABLE_S:g} s"
        )
    _check_schedule(request, duration_s)
    _check_hypothesis(request.hypothesis)
    experiment = fault_pb2.Experiment(
        name=request.name,
        state=fault_pb2.EXPERIMENT_STATE_PENDING,
        target=request.target,
        faults=request.faults,
        severity=severity,
        duration=request.duration,
        created_at=now,
    )
    if request.HasField("start_time"):
        experiment.start_time.CopyFrom(request.start_time)
    if request.HasField("interval"):
        experiment.interval.CopyFrom(request.interval)
    if request.HasField("hypothesis"):
        experiment.hypothesis.CopyFrom(request.hypothesis)
    return experiment
