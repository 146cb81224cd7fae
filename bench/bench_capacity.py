"""Capacity inputs: the CPU each process spends per gateway request, and Redis's load per request.

Starts its own stack as bench/bench_router.py does (Redis, the response cache's Redis, the fake
provider with 0 ms latency, the five services, Envoy) on free loopback ports, creates an API key
and drives the gateway with wrk. For each kind of request (uncached: `temperature: 1`, so every
request reaches the provider; cache hit: one deterministic request, repeated) at each number of
connections, --rounds times, it reads before and after the run:

  the CPU time of every process of the stack (/proc), per gateway request;
  INFO commandstats and INFO cpu of each Redis of the stack: the commands per gateway request
  (by command), the time Redis spent in them, and Redis's own CPU per gateway request.

First, the same figures with no traffic for --idle-seconds (health probes, fault leases and the
like): what an idle stack costs per second. Then, at 1 connection under MONITOR (which costs
Redis much CPU, so apart from the runs above), what each Redis is sent per request: round trips
by command, our Lua scripts' calls and keys, and the commands the scripts run inside Redis.
Last, Redis's ceiling on this machine: redis-benchmark replaying the rate limiter's take.lua call
of one request (random keys, so no limit is reached), alone and four decisions to a call as the
limiter batches under load; take.lua with one check (bench/bench_ratelimit.py's measurement);
and the single core a Redis runs commands on, over Redis's CPU per gateway request.

    .venv/bin/python -m bench.bench_capacity [--seconds 8] [--connections 1,10,50] [--rounds 2]

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import redis

from bench.bench_ratelimit import measure_lua, redis_benchmark
from bench.bench_router import bench_config, chat
from bench.proc import cpu_ms
from bench.wrk import run_wrk
from llmproxy.config import load_config
from llmproxy.devstack.authz import create_demo_key
from llmproxy.devstack.stack import Stack

# Not the gateway's: the provider stands in for OpenAI and the like.
OUTSIDE = {"fakeprovider"}
# Our Lua scripts by SHA1, as EVALSHA names them.
SCRIPTS = {
    hashlib.sha1(path.read_bytes(), usedforsecurity=False).hexdigest(): path.name
    for path in (Path(__file__).resolve().parents[1] / "services" / "llmproxy").glob("*/*.lua")
}
# A batch of decisions in one take.lua call, as the rate limiter makes under load.
BATCH = 4
KINDS = {"uncached": ("How many replicas do I need?", 1.0), "cache_hit": ("Cache me.", 0.0)}


class RedisMeter:
    """Snapshots of one Redis's command counters and CPU, and the difference of two of them."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)

    def snapshot(self) -> dict[str, Any]:
        """Calls and microseconds of every command so far, and Redis's CPU seconds so far."""
        stats = self.client.info("commandstats")
        cpu = self.client.info("cpu")
        return {
            "commands": {
                name.removeprefix("cmdstat_"): (int(s["calls"]), int(s["usec"]))
                for name, s in stats.items()
            },
            "cpu_s": float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]),
        }

    @staticmethod
    def per(before: dict[str, Any], after: dict[str, Any], count: float) -> dict[str, Any]:
        """What Redis did between two snapshots, divided by count (requests, or seconds)."""
        calls: dict[str, float] = {}
        usec = 0
        for name, (n, us) in after["commands"].items():
            was_n, was_us = before["commands"].get(name, (0, 0))
            new_n, new_us = n - was_n, us - was_us
            if name == "info" and new_n > 0:
                # The `before` snapshot's two INFO calls are counted by then: the meter's own.
                meter = min(2, new_n)
                new_us -= new_us * meter // new_n
                new_n -= meter
            if new_n > 0:
                calls[name] = round(new_n / count, 3)
                usec += new_us
        return {
            "commands": dict(sorted(calls.items(), key=lambda item: -item[1])),
            "commands_total": round(sum(calls.values()), 3),
            "usec_in_commands": round(usec / count, 2),
            "cpu_us": round((after["cpu_s"] - before["cpu_s"]) * 1e6 / count, 2),
        }

    def close(self) -> None:
        """Close the connection."""
        self.client.close()


class Monitor:
    """Every command one Redis runs while it is open (MONITOR), by whom: a client's round trip,
    or a command a Lua script called. MONITOR costs Redis much CPU: never open it while CPU is
    being measured."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.marker = f"capacity-monitor-end-{uuid.uuid4().hex}"
        self.round_trips: Counter[str] = Counter()
        self.in_scripts: Counter[str] = Counter()
        self.scripts: Counter[str] = Counter()  # script calls, by script
        self.script_keys: Counter[str] = Counter()  # the keys they were given, by script
        self.take_calls: dict[int, list[str]] = {}  # a take.lua call of each size, as sent
        self.take_sizes: Counter[int] = Counter()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._listen, daemon=True)

    def _listen(self) -> None:
        with self.client.monitor() as monitor:
            self._ready.set()
            while True:
                command = monitor.next_command()
                words = command["command"].split(" ", 2)
                name = words[0].lower()
                if name == "echo" and self.marker in command["command"]:
                    return
                in_script = command["client_type"] == "lua"
                (self.in_scripts if in_script else self.round_trips)[name] += 1
                if name == "evalsha" and not in_script:
                    self._script_call(command["command"].split(" "))

    def _script_call(self, words: list[str]) -> None:
        script, keys = SCRIPTS.get(words[1], words[1]), int(words[2])
        self.scripts[script] += 1
        self.script_keys[script] += keys
        if script == "take.lua":
            self.take_sizes[keys] += 1
            self.take_calls.setdefault(keys, words)

    def one_decision(self) -> list[str] | None:
        """The commonest take.lua call: one request's decision (its checks, unbatched)."""
        if not self.take_sizes:
            return None
        return self.take_calls[self.take_sizes.most_common(1)[0][0]]

    def __enter__(self) -> Monitor:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.echo(self.marker)  # the listener stops when it sees it
        self._thread.join(30)
        self.client.close()

    def per(self, count: int) -> dict[str, Any]:
        """Round trips and in-script commands per request, by command."""

        def divided(counter: Counter[str]) -> dict[str, float]:
            return {name: round(n / count, 3) for name, n in counter.most_common()}

        return {
            "round_trips": divided(self.round_trips),
            "round_trips_total": round(sum(self.round_trips.values()) / count, 3),
            "script_calls": divided(self.scripts),
            "keys_per_script_call": {
                script: round(self.script_keys[script] / calls, 1)
                for script, calls in self.scripts.items()
            },
            "in_scripts": divided(self.in_scripts),
            "in_scripts_total": round(sum(self.in_scripts.values()) / count, 3),
        }


def round_trips(stack: Stack, key: str, seconds: float) -> tuple[dict[str, Any], list[str] | None]:
    """For each kind of request at 1 connection, what each Redis was sent (under MONITOR), and
    one rate limit script call of an uncached request as its client sent it."""
    envoy = stack.config.envoy
    url = f"http://{envoy.host}:{envoy.listener_port}/v1/chat/completions"
    headers = {"authorization": f"Bearer {key}"}
    urls = {"redis": stack.config.redis.url}
    if stack.config.cache_redis_url is not None:
        urls["redis-cache"] = stack.config.cache_redis_url
    mixes: dict[str, Any] = {}
    samples: dict[str, list[str] | None] = {}
    for kind, (prompt, temperature) in KINDS.items():
        monitors = {name: Monitor(url) for name, url in urls.items()}
        for monitor in monitors.values():
            monitor.__enter__()
        try:
            wrk = run_wrk(url, chat(prompt, temperature), 1, seconds, headers)
        finally:
            for monitor in monitors.values():
                monitor.__exit__()
        samples[kind] = monitors["redis"].one_decision()
        mixes[kind] = {
            "requests": wrk.requests,
            **{name: m.per(max(1, wrk.requests)) for name, m in monitors.items()},
        }
    return mixes, samples["uncached"]


def redis_meters(stack: Stack) -> dict[str, RedisMeter]:
    """A meter for the stack's Redis and, when it has its own, the response cache's."""
    meters = {"redis": RedisMeter(stack.config.redis.url)}
    if stack.config.cache_redis_url is not None:
        meters["redis-cache"] = RedisMeter(stack.config.cache_redis_url)
    return meters


def _by_component(per_process: dict[str, float]) -> dict[str, float]:
    # Instances of a service ("ratelimit", "ratelimit-1") add up to their component.
    components: dict[str, float] = {}
    for process, value in per_process.items():
        if process in OUTSIDE:
            continue
        name = process if process.startswith("redis") else process.split("-")[0]
        components[name] = round(components.get(name, 0.0) + value, 3)
    return components


def _measure(
    stack: Stack, meters: dict[str, RedisMeter], load: Any, count_of: Any
) -> dict[str, Any]:
    """Run load(); CPU per process and Redis's work, each divided by count_of(load's result)."""
    pids = {name: p.pid for name, p in stack.processes.items() if p.pid is not None}
    redis_before = {name: meter.snapshot() for name, meter in meters.items()}
    cpu_before = cpu_ms(pids)
    result = load()
    cpu_after = cpu_ms(pids)
    redis_after = {name: meter.snapshot() for name, meter in meters.items()}
    count = max(1, count_of(result))
    per_process = {p: (cpu_after[p] - cpu_before[p]) / count for p in pids}
    components = _by_component(per_process)
    gateway = {k: v for k, v in components.items() if not k.startswith("redis")}
    return {
        "result": result,
        "cpu_ms": {
            **components,
            "gateway_without_redis": round(sum(gateway.values()), 3),
            "all": round(sum(components.values()), 3),
            "provider_outside": round(sum(per_process[p] for p in pids if p in OUTSIDE), 3),
        },
        "redis": {
            name: RedisMeter.per(redis_before[name], redis_after[name], count) for name in meters
        },
    }


def idle(stack: Stack, meters: dict[str, RedisMeter], seconds: float) -> dict[str, Any]:
    """CPU per second of every process, and Redis's commands per second, with no traffic."""

    def wait() -> float:
        start = time.monotonic()
        time.sleep(seconds)  # the measurement is of this stretch of time
        return time.monotonic() - start

    measured = _measure(stack, meters, wait, lambda elapsed: elapsed)
    return {
        "seconds": seconds,
        "cpu_ms_per_s": measured["cpu_ms"],
        "redis_per_s": measured["redis"],
    }


def per_request(
    stack: Stack, meters: dict[str, RedisMeter], key: str, args: argparse.Namespace
) -> list[dict[str, Any]]:
    """Every kind of request at every number of connections, args.rounds times."""
    envoy = stack.config.envoy
    url = f"http://{envoy.host}:{envoy.listener_port}/v1/chat/completions"
    headers = {"authorization": f"Bearer {key}"}
    runs = []
    for round_ in range(1, args.rounds + 1):
        for kind, (prompt, temperature) in KINDS.items():
            body = chat(prompt, temperature)
            # The first answer fills the cache; warms connections and pools either way.
            run_wrk(url, body, 1, 1, headers)
            for connections in args.connections:
                measured = _measure(
                    stack,
                    meters,
                    lambda: run_wrk(url, body, connections, args.seconds, headers),  # noqa: B023
                    lambda wrk: wrk.requests,
                )
                wrk = measured.pop("result")
                runs.append(
                    {
                        "kind": kind,
                        "connections": connections,
                        "round": round_,
                        "load_average": [round(x, 2) for x in os.getloadavg()],
                        "wrk": wrk.as_dict(),
                        "cpu_ms_per_request": measured["cpu_ms"],
                        "redis_per_request": measured["redis"],
                    }
                )
    return runs


def _x_cache(url: str, body: str, headers: dict[str, str]) -> str:
    answer = httpx.post(url, content=body, headers={**headers, "content-type": "application/json"})
    return answer.headers.get("x-cache", f"status {answer.status_code}")


def spread(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """For each kind and number of connections: [lowest, highest] of each figure over rounds."""
    summary: dict[str, Any] = {}
    for run in runs:
        entry = summary.setdefault(f"{run['kind']}_c{run['connections']}", {})
        figures = {
            "requests_per_s": run["wrk"]["requests_per_s"],
            **{f"cpu_ms.{k}": v for k, v in run["cpu_ms_per_request"].items()},
            **{
                f"{name}.{field}": r[field]
                for name, r in run["redis_per_request"].items()
                for field in ("commands_total", "cpu_us", "usec_in_commands")
            },
        }
        for figure, value in figures.items():
            low, high = entry.get(figure, (value, value))
            entry[figure] = (min(low, value), max(high, value))
    return {
        case: {figure: list(bounds) for figure, bounds in entry.items()}
        for case, entry in summary.items()
    }


def replay_argv(words: list[str], decisions: int = 1) -> list[str]:
    """A take.lua call as redis-benchmark's arguments, its checks repeated for `decisions`
    decisions, each key one of many random ones (redis-benchmark's -r) so that the replay
    reaches no limit and misses no counter."""
    keys = int(words[2])
    checks = " ".join(words[4 + keys :])  # EVALSHA sha numkeys KEYS... prefix checks
    return [
        *words[:2],
        str(keys * decisions),
        *(f"{key}:__rand_int__" for key in words[3 : 3 + keys] * decisions),
        words[3 + keys],
        " ".join([checks] * decisions),
    ]


def redis_ceiling(
    stack: Stack, runs: list[dict[str, Any]], sample: list[str] | None, rounds: int
) -> dict[str, Any]:
    """Redis's ceiling on this machine, three ways: redis-benchmark replaying the rate limiter's
    take.lua call of one request (nearly all a request costs Redis), alone and BATCH decisions
    to a call; take.lua with one check (bench/bench_ratelimit.py's measurement); and one core
    over Redis's CPU per gateway request (a Redis runs commands on one thread)."""
    port = urlsplit(stack.config.redis.url).port or 6379
    highest: dict[str, dict[str, float]] = {}
    for run in runs:
        case = f"{run['kind']}_c{run['connections']}"
        for name, redis_run in run["redis_per_request"].items():
            cpu_us = highest.setdefault(name, {}).get(case, 0.0)
            highest[name][case] = max(cpu_us, redis_run["cpu_us"])
    replay = None
    if sample is not None:
        client = redis.Redis(port=port)
        # redis-benchmark counts error replies as answers: Redis's own counters say none failed.
        before = client.info("commandstats")["cmdstat_evalsha"]
        replay = {
            "checks_per_decision": int(sample[2]),
            "one_decision_per_call_calls_per_s": [
                redis_benchmark(port, replay_argv(sample), 1) for _ in range(rounds)
            ],
            f"{BATCH}_decisions_per_call_calls_per_s": [
                redis_benchmark(port, replay_argv(sample, BATCH), 1) for _ in range(rounds)
            ],
        }
        after = client.info("commandstats")["cmdstat_evalsha"]
        client.close()
        replay["calls"] = int(after["calls"]) - int(before["calls"])
        replay["failed_calls"] = int(after["failed_calls"]) - int(before["failed_calls"])
    return {
        "replayed_rate_limit_call": replay,
        "take_lua_one_check": measure_lua(port),
        "gateway_requests_per_s_at_one_redis_core": {
            name: {case: round(1e6 / us) if us else None for case, us in cases.items()}
            for name, cases in highest.items()
        },
        "note": "each Redis: one core / its highest CPU per request of the rounds",
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each wrk run")
    parser.add_argument(
        "--connections",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[1, 10, 50],
        help="wrk connections, comma-separated",
    )
    parser.add_argument("--rounds", type=int, default=2, help="measurements of each case")
    parser.add_argument("--idle-seconds", type=float, default=10.0, help="idle measurement")
    parser.add_argument(
        "--monitor-seconds", type=float, default=3.0, help="MONITOR run of each kind"
    )
    parser.add_argument(
        "--skip-redis-benchmark", action="store_true", help="leave out take.lua's ceiling"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = bench_config(Path(tmp))
        environ = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
        stack = Stack(load_config(path, environ), path, Path(tmp) / "run", environ)
        await stack.start()
        meters = redis_meters(stack)
        try:
            token = stack.environ[stack.config.control.admin_token_env]
            key = await create_demo_key(stack.config, token)
            load_before = os.getloadavg()
            quiet = idle(stack, meters, args.idle_seconds)
            runs = per_request(stack, meters, key, args)
            sent, sample = round_trips(stack, key, args.monitor_seconds)
            envoy = stack.config.envoy
            url = f"http://{envoy.host}:{envoy.listener_port}/v1/chat/completions"
            auth = {"authorization": f"Bearer {key}"}
            x_cache = {kind: _x_cache(url, chat(*KINDS[kind]), auth) for kind in KINDS}
            ceiling = (
                None
                if args.skip_redis_benchmark
                else redis_ceiling(stack, runs, sample, args.rounds)
            )
            load_after = os.getloadavg()
        finally:
            for meter in meters.values():
                meter.close()
            stack.stop()
    result = {
        "benchmark": "capacity",
        "machine": {
            "cpus": os.cpu_count(),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in load_after],
        },
        "x_cache_of_each_kind": x_cache,
        "idle": quiet,
        "redis_commands_sent_per_request_at_1_connection": sent,
        "spread": spread(runs),
        "runs": runs,
        "redis_ceiling": ceiling,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
