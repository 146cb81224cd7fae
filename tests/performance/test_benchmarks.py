"""A tiny run of each benchmark script: it starts what it measures and reports every figure.

Nothing here asserts on a figure's size (the machine is shared): only that a short run ends
well, names each figure it promises, and, where the benchmark checks its own work, that every
answer it counted was real. Not here: bench/bench_router.py, bench/bench_capacity.py and
bench/bench_tracing.py drive the gateway with wrk, which the bootstrap does not install, and
start whole stacks (two, for tracing) besides.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SMOKE_TIMEOUT_S = 300  # a tiny run still starts Redis, services and load generators


def run(*argv: str) -> str:
    """Run a benchmark with this interpreter from the repository root; its standard output."""
    done = subprocess.run(
        [sys.executable, *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=SMOKE_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done.stdout


@pytest.mark.timeout(SMOKE_TIMEOUT_S)
def test_bench_health_reports_answer_latency_and_detection_times() -> None:
    report = json.loads(
        run("-m", "bench.bench_health", "--seconds", "1", "--concurrency", "2", "--rounds", "1")
    )
    answers = report["answers"]["concurrency_2"]
    rpcs = {"ListProviders", "GetProvider", "grpc.health/Check", "ReportOutcomes(100)", "all"}
    assert set(answers) == {*rpcs, "errors"}
    for rpc in rpcs:
        assert answers[rpc]["calls"] > 0, rpc
        assert set(answers[rpc]) == {"calls", "per_s", "p50_ms", "p95_ms", "p99_ms", "max_ms"}
    assert answers["errors"] == 0
    detection = report["detection_default_settings"]
    assert set(detection) == {"503", "hang", "reset"}
    for times in detection.values():
        assert len(times["unhealthy_after_s"]) == len(times["healthy_after_recovery_s"]) == 1


@pytest.mark.timeout(SMOKE_TIMEOUT_S)
def test_bench_ratelimit_reports_every_side_and_verifies_its_decisions() -> None:
    report = json.loads(
        run(
            "-m",
            "bench.bench_ratelimit",
            "--instances=1",
            "--requests=500",
            "--rounds=1",
            "--warmup=500",
            "--connections=1",
            "--streams=4",
            "--limits-seconds=1",
        )
    )
    assert report["benchmark"] == "ratelimit"
    for figure in ("ours_decisions_per_s", "noop_grpc_requests_per_s", "ours_over_noop"):
        assert figure in report
    (measured,) = report["rounds"]
    ours = measured["ours"]
    assert ours["requests"] == 500
    assert set(ours["latency_ms"]) == {"p50", "p99", "p999", "mean"}
    # h2load counts gRPC errors as successes: the services' own metrics say each was real.
    assert ours["verified"]["all_real_decisions"], ours["verified"]
    assert set(report["one_caller"]) == {"ours", "noop"}
    assert set(report["redis_benchmark_take_lua"]) == {
        "sliding_counter_calls_per_s",
        "sliding_counter_calls_per_s_pipelined_16",
        "sliding_log_calls_per_s",
        "sliding_log_calls_per_s_pipelined_16",
        "note",
    }
    assert report["limits_library"]["processes"] == 1


# bench_authz prints a line per scenario rather than JSON.
AUTHZ_LINE = re.compile(
    r"^(?P<scenario>.+?), (?P<in_flight>\d+) in flight +(?P<checks>\d+) checks +\d+ checks/s +"
    r"p50 [\d.]+ ms +p90 [\d.]+ ms +p99 [\d.]+ ms +max [\d.]+ ms$",
    re.MULTILINE,
)


@pytest.mark.timeout(SMOKE_TIMEOUT_S)
def test_bench_authz_reports_each_scenario_at_each_concurrency() -> None:
    output = run("scripts/bench_authz.py", "--requests", "200", "--concurrency", "1,4")
    lines = [m.groupdict() for m in AUTHZ_LINE.finditer(output)]
    assert [(line["in_flight"], line["checks"]) for line in lines] == [("1", "200")] * 2 + [
        ("4", "200")
    ] * 2, output
    assert {line["scenario"] for line in lines} == {
        "cached key, no budget",
        "cached key + budget (2 Redis reads)",
    }
    assert "load average after" in output


@pytest.mark.timeout(SMOKE_TIMEOUT_S)
def test_bench_control_reports_each_kind_of_caller() -> None:
    report = json.loads(run("-m", "bench.bench_control", "--calls", "20", "--fresh-tokens", "5"))
    latency = report["latency"]
    kinds = {"open", "get_limits_admin", "get_limits_token_cached", "get_limits_token_first_use"}
    assert set(latency) == kinds
    for kind in kinds:
        assert set(latency[kind]) == {"calls", "p50_ms", "p90_ms", "p99_ms"}, kind
    assert latency["get_limits_token_first_use"]["calls"] == 5
    assert set(report["in_process"]) == {
        "continuation_alone_us",
        "open_rpc_through_interceptor_us",
        "bootstrap_admin_caller_us",
        "cached_token_caller_us",
    }


@pytest.mark.timeout(SMOKE_TIMEOUT_S)
def test_bench_edge_reports_refusals_the_floor_and_a_client_through_a_flood() -> None:
    report = json.loads(run("-m", "bench.bench_edge", "--seconds", "4"))
    for phase in ("refusals", "floor"):
        assert set(report[phase]) == {"requests_per_s", "done", "2xx", "4xx", "5xx"}, phase
        assert report[phase]["done"] > 0, phase
    assert report["floor"]["2xx"] == report["floor"]["done"]
    assert report["refusals"]["4xx"] > 0  # one address far over its budget is refused
    clients = [report["client_alone"]]
    for name in ("flood_max", "flood_2000_per_s"):
        clients.append(report[name]["client"])
        assert report[name]["flood"]["done"] > 0, name
        assert "reached_authz" in report[name]["flood"], name
    for client in clients:
        assert set(client) == {"sent", "codes", "success_rate", "p50_ms", "p99_ms"}
        assert client["sent"] > 0


@pytest.mark.timeout(SMOKE_TIMEOUT_S)
def test_bench_redis_reports_a_restart_and_a_failover() -> None:
    report = json.loads(run("-m", "bench.bench_redis", "--keys", "1000", "--rounds", "1"))
    restart = report["aof_restart"]
    assert restart["keys"] == restart["keys_back"] == 1000
    assert restart["restart_to_ready_s"] > 0
    (kill_to_write,) = report["failover"]["kill_to_first_write_s"]
    assert kill_to_write > 0
