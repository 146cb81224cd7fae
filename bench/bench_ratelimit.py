"""Rate limit benchmark: ShouldRateLimit decisions per second, beside what bounds them.

    .venv/bin/python -m bench.bench_ratelimit [--instances 2] [--requests 30000] [--rounds 5]

Runs on this machine only (loopback), every process started and stopped here:
  ours       N ratelimit processes (each its own port, as Envoy's cluster endpoints) on a local
             redis-server, driven by h2load (C, from Debian's nghttp2-client) over HTTP/2
  noop       the same h2load load on N no-op grpc.aio servers: the ceiling of any Python
             gRPC service here
  lua        redis-benchmark calling take.lua itself (one check per call), unpipelined and
             pipelined: the ceiling of Redis running the same script
  limits     the Python `limits` library's Redis limiters making the same decisions (N
             processes, one round trip per check)

Traffic: every request is one decision of three descriptors, as Envoy sends them: tenant
(sliding counter, 100k/min), tenant+key_id (sliding log, 60/min), tokens+tenant+key_id
(sliding counter, 1M tokens/min, hits_addend 500). h2load sends one body file, but it reads
the file for every request (pread), so a thread here rewrites the key in place 1,000 times a
second: it cycles through 10,000 keys (100 tenants), and one tick in 20 picks one of 10 hot
keys, which go over their limit (that is where the over-limit cache answers). The cycle
goes on from one h2load run to the next, and before anything is measured ours is driven
through one whole cycle (10 s), so every round measures the steady state of this traffic
rather than the first touch of most keys. The mix is printed beside the figures, from the
services' own decision metrics, which also prove every answer was a real decision (h2load
counts gRPC errors as successes).

Fairness on a shared machine: both sets of servers run side by side (idle ones cost nothing)
and are driven in alternation, ours then noop, --rounds times, so each ratio compares two runs
a few seconds apart under the same background load; the medians and each round are printed.
Beside throughput, the CPU time each side's processes used per request (from /proc), which
other processes' load distorts much less than requests per second. Last, one_caller: one
connection with one stream on one process of each side, a caller that sends its next request
when it has the answer (the latency of a decision with nothing queued).

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis
import yaml
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2 as common_pb2
from envoy.service.ratelimit.v3 import rls_pb2
from google.protobuf.wrappers_pb2 import UInt64Value

from bench.ports import wait_port
from llmproxy.common.net import free_port_block
from llmproxy.common.settings import ControlSettings
from llmproxy.devstack.redis import redis_process

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
PYTHON = sys.executable
METHOD = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"
KEYS = 10_000
HOT_KEYS = 10
HOT_EVERY = 20  # one rewrite in 20 picks a hot key
REWRITES_PER_S = 1000
ONE_CALLER_REQUESTS = 3000
LIMITS = """
domain: llmproxy
descriptors:
  - key: tenant
    rate_limit: {unit: minute, requests_per_unit: 100000}
    descriptors:
      - key: key_id
        rate_limit: {unit: minute, requests_per_unit: 60, algorithm: sliding_log}
  - key: tokens
    descriptors:
      - key: tenant
        descriptors:
          - key: key_id
            rate_limit: {unit: minute, requests_per_unit: 1000000}
"""
APT = {"h2load": "nghttp2-client", "redis-server": "redis-server", "redis-benchmark": "redis-tools"}


def ensure_tools() -> None:
    """Install the Debian packages of missing tools (the bench needs them, the tests not)."""
    missing = sorted({pkg for tool, pkg in APT.items() if shutil.which(tool) is None})
    if missing:
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True)
        subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", *missing], check=True)


def body(key: int) -> bytes:
    """The length-prefixed gRPC message of one decision for key (fixed length for any key)."""
    tenant, key_id = f"t{key // 100:03d}", f"k{key:05d}"
    entry = common_pb2.RateLimitDescriptor.Entry
    message = rls_pb2.RateLimitRequest(
        domain="llmproxy",
        descriptors=[
            common_pb2.RateLimitDescriptor(entries=[entry(key="tenant", value=tenant)]),
            common_pb2.RateLimitDescriptor(
                entries=[entry(key="tenant", value=tenant), entry(key="key_id", value=key_id)]
            ),
            common_pb2.RateLimitDescriptor(
                entries=[
                    entry(key="tokens", value="estimate"),
                    entry(key="tenant", value=tenant),
                    entry(key="key_id", value=key_id),
                ],
                hits_addend=UInt64Value(value=500),
            ),
        ],
    ).SerializeToString()
    return b"\x00" + struct.pack(">I", len(message)) + bytes(message)


class Rewriter(threading.Thread):
    """Rewrites each body file's key in place, REWRITES_PER_S times a second."""

    ticks = 0  # the clock of every run: each run's keys go on where the last one stopped

    def __init__(self, files: list[Path]) -> None:
        super().__init__(daemon=True)
        self._fds = [os.open(f, os.O_WRONLY) for f in files]
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(1 / REWRITES_PER_S):
            Rewriter.ticks += 1
            tick = Rewriter.ticks
            for index, fd in enumerate(self._fds):
                if tick % HOT_EVERY == 0:
                    key = (tick // HOT_EVERY + index) % HOT_KEYS
                else:
                    key = (tick + index * KEYS // len(self._fds)) % KEYS
                os.pwrite(fd, body(key), 0)

    def stop(self) -> None:
        self._halt.set()
        self.join()
        for fd in self._fds:
            os.close(fd)


def h2load(port: int, data: Path, requests: int, args: argparse.Namespace, log: Path) -> Any:
    """Start h2load against one server."""
    return subprocess.Popen(
        [
            "h2load",
            "-n",
            str(requests),
            "-c",
            str(args.connections),
            "-m",
            str(args.streams),
            "--log-file",
            str(log),
            "-H",
            "content-type: application/grpc",
            "-H",
            "te: trailers",
            "-d",
            str(data),
            f"http://127.0.0.1:{port}{METHOD}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def drive(
    ports: list[int], files: list[Path], requests: int, args: argparse.Namespace, work: Path
) -> dict[str, Any]:
    """h2load on every port at once, keys rewritten meanwhile; totals and latency."""
    logs = [work / f"h2load-{port}.log" for port in ports]
    for log in logs:
        log.unlink(missing_ok=True)  # h2load appends: each run's latencies are its own
    rewriter = Rewriter(files)
    rewriter.start()
    start = time.monotonic()
    try:
        runs = [
            h2load(port, data, requests // len(ports), args, log)
            for port, data, log in zip(ports, files, logs, strict=True)
        ]
        outputs = [run.communicate()[0] for run in runs]
    finally:
        rewriter.stop()
    elapsed = time.monotonic() - start
    succeeded = 0
    for output in outputs:
        line = next(x for x in output.splitlines() if x.startswith("requests:"))
        succeeded += int(line.split("done, ")[1].split(" succeeded")[0])
    latencies = sorted(
        int(line.split()[2]) for log in logs for line in log.read_text().splitlines() if line
    )

    def pct(q: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] / 1000, 2)

    return {
        "requests": succeeded,
        "seconds": round(elapsed, 2),
        "per_s": round(succeeded / elapsed),
        "latency_ms": {
            "p50": pct(0.5),
            "p99": pct(0.99),
            "p999": pct(0.999),
            "mean": round(statistics.fmean(latencies) / 1000, 2),
        },
    }


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time the processes used so far (from /proc)."""
    total_ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total_ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return total_ticks / os.sysconf("SC_CLK_TCK")


def drive_measured(
    servers: tuple[list[int], list[int]],
    files: list[Path],
    requests: int,
    args: argparse.Namespace,
    work: Path,
) -> dict[str, Any]:
    """drive() on servers (ports, pids), with the CPU time they spent per request."""
    ports, pids = servers
    before = cpu_seconds(pids)
    result = drive(ports, files, requests, args, work)
    used = cpu_seconds(pids) - before
    result["server_cpu_us_per_request"] = round(used / max(result["requests"], 1) * 1e6)
    result["server_cores_busy"] = round(used / result["seconds"], 2)
    return result


@contextlib.contextmanager
def processes(
    argvs: list[list[str]], work: Path, name: str, env: list[dict[str, str]] | None = None
) -> Iterator[list[subprocess.Popen[bytes]]]:
    started = []
    try:
        for index, argv in enumerate(argvs):
            log = (work / f"{name}-{index}.log").open("wb")
            started.append(
                subprocess.Popen(
                    argv, stdout=log, stderr=subprocess.STDOUT, env=env[index] if env else None
                )
            )
        yield started
    finally:
        for process in started:
            process.terminate()
        for process in started:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def scrape(port: int) -> dict[str, float]:
    """Prometheus samples of one instance, name{labels} -> value."""
    import httpx  # noqa: PLC0415

    found: dict[str, float] = {}
    for line in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            found[name] = float(value)
    return found


def total(samples: list[dict[str, float]], prefix: str, contains: str = "") -> float:
    return sum(v for s in samples for k, v in s.items() if k.startswith(prefix) and contains in k)


@contextlib.contextmanager
def ours_running(
    args: argparse.Namespace, work: Path, redis_url: str
) -> Iterator[tuple[list[int], list[int], list[int]]]:
    """N ratelimit processes on redis_url: their gRPC ports, metrics ports and pids."""
    limits = work / "limits.yaml"
    limits.write_text(LIMITS)
    grpc_base, metrics_base = free_port_block(args.instances), free_port_block(args.instances)
    config = yaml.safe_load((ROOT / "deploy" / "llmproxy.yaml").read_text())
    config["log_level"] = "WARNING"
    config["redis"]["url"] = redis_url
    config["services"]["ratelimit"].update(
        grpc_port=grpc_base,
        metrics_port=metrics_base,
        limits_file=str(limits),
        instances=args.instances,
        port_step=1,
    )
    path = work / "llmproxy.yaml"
    path.write_text(yaml.safe_dump(config))
    ports = [grpc_base + i for i in range(args.instances)]
    metrics_ports = [metrics_base + i for i in range(args.instances)]
    envs = [
        {
            **os.environ,
            "LLMPROXY__SERVICES__RATELIMIT__GRPC_PORT": str(port),
            "LLMPROXY__SERVICES__RATELIMIT__METRICS_PORT": str(metrics),
        }
        for port, metrics in zip(ports, metrics_ports, strict=True)
    ]
    argv = [PYTHON, "-m", "llmproxy.ratelimit", "--config", str(path)]
    with processes([argv] * args.instances, work, "ratelimit", envs) as started:
        for port in ports:
            wait_port(port)
        yield ports, metrics_ports, [p.pid for p in started]


def measure_ours(
    args: argparse.Namespace,
    work: Path,
    redis_url: str,
    files: list[Path],
    ours: tuple[list[int], list[int], list[int]],
) -> dict[str, Any]:
    """One measured run on the running ratelimit processes, with the mix from their metrics."""
    ports, metrics_ports, pids = ours
    before = [scrape(p) for p in metrics_ports]
    client = redis.Redis.from_url(redis_url)
    keys_before = sum(1 for _ in client.scan_iter(match="llmproxy:rl:*key_id=*:l", count=1000))
    result = drive_measured((ports, pids), files, args.requests, args, work)
    after = [scrape(p) for p in metrics_ports]

    def delta(prefix: str, contains: str = "") -> int:
        return round(total(after, prefix, contains) - total(before, prefix, contains))

    decisions = delta("llmproxy_ratelimit_decisions_total")
    errors = delta("llmproxy_grpc_server_handled_total", "ShouldRateLimit") - delta(
        "llmproxy_grpc_server_handled_total", 'code="OK"'
    )
    checks, calls = (
        delta("llmproxy_ratelimit_batch_checks_sum"),
        delta("llmproxy_ratelimit_batch_checks_count"),
    )
    result["verified"] = {
        "decisions_counted_by_the_services": decisions,
        "grpc_errors": errors,
        "degradations": delta("llmproxy_ratelimit_degradations_total"),
        "all_real_decisions": decisions == result["requests"] and errors == 0,
    }
    result["mix"] = {
        "ok": delta("llmproxy_ratelimit_decisions_total", 'outcome="ok"'),
        "over_limit": delta("llmproxy_ratelimit_decisions_total", 'outcome="over_limit"'),
        "degraded": delta("llmproxy_ratelimit_decisions_total", 'outcome="degraded"'),
        "checks_per_decision": 3,
        "checks_answered_by_local_over_limit_cache": delta(
            "llmproxy_ratelimit_local_cache_hits_total"
        ),
        "checks_sent_to_redis": checks,
        "redis_script_calls": calls,
        "mean_checks_per_script_call": round(checks / calls, 1) if calls else 0,
    }
    result["mix"]["distinct_keys_counted_in_redis_so_far"] = sum(
        1 for _ in client.scan_iter(match="llmproxy:rl:*key_id=*:l", count=1000)
    )
    result["mix"]["new_keys_counted_in_redis"] = (
        result["mix"]["distinct_keys_counted_in_redis_so_far"] - keys_before
    )
    client.close()
    return result


@contextlib.contextmanager
def noop_running(args: argparse.Namespace, work: Path) -> Iterator[tuple[list[int], list[int]]]:
    """N no-op servers: their ports and pids."""
    base = free_port_block(args.instances)
    ports = [base + i for i in range(args.instances)]
    with processes(
        [[PYTHON, str(BENCH / "noop_server.py"), str(p)] for p in ports], work, "noop"
    ) as started:
        for port in ports:
            wait_port(port)
        yield ports, [p.pid for p in started]


def measure_rounds(
    args: argparse.Namespace, work: Path, redis_url: str, files: list[Path]
) -> dict[str, Any]:
    """Ours and the no-op driven in alternation, args.rounds times; medians and every round."""
    with ours_running(args, work, redis_url) as ours, noop_running(args, work) as noop:
        # Connections, scripts and caches warm on both sides before anything counts; ours
        # until the rewriter has been once through every key (a round starts warm, as a
        # long-running instance is, instead of first seeing most keys).
        cycle_end = Rewriter.ticks + KEYS
        while Rewriter.ticks < cycle_end:
            drive(ours[0], files, args.warmup, args, work)
        drive(noop[0], files, args.warmup, args, work)
        rounds = []
        for _ in range(args.rounds):
            mine = measure_ours(args, work, redis_url, files, ours)
            ceiling = drive_measured(noop, files, args.requests, args, work)
            rounds.append(
                {
                    "ours": mine,
                    "noop": ceiling,
                    "ours_over_noop": round(mine["per_s"] / ceiling["per_s"], 2),
                    "noop_cpu_over_ours_cpu": round(
                        ceiling["server_cpu_us_per_request"] / mine["server_cpu_us_per_request"],
                        2,
                    ),
                    "loadavg_1min_after": round(os.getloadavg()[0], 2),
                }
            )
        one_caller = measure_one_caller(args, work, files, ours, noop)
    return {
        "ours_decisions_per_s": statistics.median(r["ours"]["per_s"] for r in rounds),
        "noop_grpc_requests_per_s": statistics.median(r["noop"]["per_s"] for r in rounds),
        "ours_over_noop": statistics.median(r["ours_over_noop"] for r in rounds),
        "ours_over_noop_range": [
            min(r["ours_over_noop"] for r in rounds),
            max(r["ours_over_noop"] for r in rounds),
        ],
        "noop_cpu_over_ours_cpu": statistics.median(r["noop_cpu_over_ours_cpu"] for r in rounds),
        "rounds": rounds,
        "one_caller": one_caller,
    }


def measure_one_caller(
    args: argparse.Namespace,
    work: Path,
    files: list[Path],
    ours: tuple[list[int], list[int], list[int]],
    noop: tuple[list[int], list[int]],
) -> dict[str, Any]:
    """One connection with one stream on one process of each: a caller that waits for each
    answer, so the latency of a decision with nothing queued."""
    one = argparse.Namespace(**{**vars(args), "connections": 1, "streams": 1})
    sides = {"ours": (ours[0][:1], ours[2][:1]), "noop": (noop[0][:1], noop[1][:1])}
    return {
        name: drive_measured(side, files[:1], ONE_CALLER_REQUESTS, one, work)
        for name, side in sides.items()
    }


def redis_benchmark(port: int, argv: list[str], pipeline: int) -> float:
    done = subprocess.run(
        [
            "redis-benchmark",
            "-p",
            str(port),
            "-n",
            "200000",
            "-c",
            "50",
            "-P",
            str(pipeline),
            "-r",
            str(KEYS),
            "-q",
            *argv,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    # "EVALSHA ...: 81234.56 requests per second, p50=..."
    figure = done.stdout.strip().splitlines()[-1].split(":", 1)[1].split("requests per second")[0]
    return round(float(figure.strip().split()[-1]))


def measure_lua(redis_port: int) -> dict[str, Any]:
    source = (ROOT / "services" / "llmproxy" / "ratelimit" / "take.lua").read_text()
    sha = redis.Redis(port=redis_port).script_load(source)
    counter = ["EVALSHA", sha, "1", "bench:{__rand_int__}:c", "p.", "c 100000 60000 1 -"]
    log = [
        "EVALSHA",
        sha,
        "2",
        "bench:{__rand_int__}:l",
        "bench:{__rand_int__}:l:sum",
        "p.",
        "l 60 60000 1 m__rand_int__",
    ]
    return {
        "sliding_counter_calls_per_s": redis_benchmark(redis_port, counter, 1),
        "sliding_counter_calls_per_s_pipelined_16": redis_benchmark(redis_port, counter, 16),
        "sliding_log_calls_per_s": redis_benchmark(redis_port, log, 1),
        "sliding_log_calls_per_s_pipelined_16": redis_benchmark(redis_port, log, 16),
        "note": "one check per call; a decision here is 3 checks",
    }


def measure_limits(args: argparse.Namespace, redis_url: str) -> dict[str, Any]:
    runs = [
        subprocess.Popen(
            [PYTHON, str(BENCH / "limits_library.py"), redis_url, str(args.limits_seconds), str(i)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(args.instances)
    ]
    decisions = sum(int(run.communicate()[0].split()[0]) for run in runs)
    return {
        "processes": args.instances,
        "decisions_per_s": round(decisions / args.limits_seconds),
        "note": "3 limiter hits per decision, one Redis round trip each",
    }


def main() -> None:
    # Every service needs the stack's service token; the rate limiter's decisions need no other.
    os.environ.setdefault(ControlSettings().service_token_env, secrets.token_urlsafe(32))
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--instances", type=int, default=2, help="ratelimit processes (and no-op ones)"
    )
    parser.add_argument("--requests", type=int, default=30_000, help="measured decisions per round")
    parser.add_argument(
        "--rounds", type=int, default=5, help="alternations of ours and the no-op measured"
    )
    parser.add_argument("--warmup", type=int, default=6_000, help="decisions per warm-up run")
    parser.add_argument("--connections", type=int, default=2, help="h2load connections per process")
    parser.add_argument("--streams", type=int, default=16, help="concurrent streams per connection")
    parser.add_argument(
        "--limits-seconds", type=float, default=10.0, help="duration of the limits run"
    )
    parser.add_argument("--keep", type=Path, help="keep logs and files in this folder")
    args = parser.parse_args()
    ensure_tools()
    with tempfile.TemporaryDirectory(prefix="llmproxy-bench-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        files = []
        for index in range(args.instances):
            data = work / f"body-{index}.bin"
            data.write_bytes(body(index))
            files.append(data)
        redis_port = free_port_block(1)
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        server = redis_process(redis_url, work / "redis", work / "redis.log")
        server.start()
        try:
            wait_port(redis_port)
            load_before = os.getloadavg()
            measured = measure_rounds(args, work, redis_url, files)
            lua = measure_lua(redis_port)
            redis.Redis.from_url(redis_url).flushall()
            library = measure_limits(args, redis_url)
            load_after = os.getloadavg()
        finally:
            server.stop()
    print(
        json.dumps(
            {
                "benchmark": "ratelimit",
                "machine": {
                    "cpus": os.cpu_count(),
                    "loadavg_before": [round(x, 2) for x in load_before],
                    "loadavg_after": [round(x, 2) for x in load_after],
                },
                "load": {
                    "generator": "h2load (nghttp2-client)",
                    "instances": args.instances,
                    "connections_per_instance": args.connections,
                    "streams_per_connection": args.streams,
                    "keys": KEYS,
                    "hot_keys": HOT_KEYS,
                },
                "goal_decisions_per_s": 10_000,
                "goal_ours_over_noop": 0.7,
                **measured,
                "redis_benchmark_take_lua": lua,
                "limits_library": library,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
