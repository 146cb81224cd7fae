"""Health service benchmark: answer latency under load while probes hang, and detection times.

Starts its own Redis, three fake providers and the health service (a real process) on free
loopback ports. Two of the providers then hang on every call, so that the health service has
probes hanging at every moment of the run. It prints one JSON document:

- `answers`: latency of ListProviders, GetProvider, grpc.health Check and ReportOutcomes
  (batches of 100 outcomes), round robin, from each of `--concurrency` levels of concurrent
  callers (a handful of routers and Envoys, then many) for `--seconds` each;
- `detection`: for each outage kind of the fake provider, seconds until the provider is
  UNHEALTHY, and until it is HEALTHY again once the outage ends (default settings).

The load generator runs on the same two cores as the service (and whatever else runs there);
the load average before and after is included for that reason.

    .venv/bin/python -m bench.bench_health [--seconds 10] [--concurrency 8,32] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import httpx
import yaml
from grpc_health.v1 import health_pb2 as grpc_health_pb2
from grpc_health.v1 import health_pb2_grpc as grpc_health_pb2_grpc

from llmproxy._gen.health.v1 import health_pb2, health_pb2_grpc
from llmproxy.common.credentials import bearer_channel
from llmproxy.common.net import free_port
from llmproxy.common.settings import ControlSettings
from llmproxy.config import DEFAULT_CONFIG, FakeProviderSettings
from llmproxy.devstack.probes import grpc_serving
from llmproxy.devstack.process import ManagedProcess
from llmproxy.devstack.redis import redis_process
from llmproxy.devstack.stack import fake_provider_process

PROVIDERS = ("steady", "hangs1", "hangs2")
SERVICE_TOKEN_ENV = ControlSettings().service_token_env
OUTAGES = ("503", "hang", "reset")


def percentile(sorted_ms: list[float], share: float) -> float:
    index = min(len(sorted_ms) - 1, max(0, round(share * len(sorted_ms)) - 1))
    return round(sorted_ms[index], 3)


def summary(samples_ms: list[float], seconds: float) -> dict[str, Any]:
    ordered = sorted(samples_ms)
    return {
        "calls": len(ordered),
        "per_s": round(len(ordered) / seconds, 1),
        "p50_ms": percentile(ordered, 0.50),
        "p95_ms": percentile(ordered, 0.95),
        "p99_ms": percentile(ordered, 0.99),
        "max_ms": round(ordered[-1], 3),
    }


def write_config(directory: Path, ports: dict[str, int]) -> tuple[Path, dict[str, Any]]:
    data: dict[str, Any] = yaml.safe_load(DEFAULT_CONFIG.read_text())
    data["log_level"] = "WARNING"
    data["redis"]["url"] = f"redis://127.0.0.1:{free_port()}/0"
    for service in data["services"].values():
        service.update(grpc_port=free_port(), metrics_port=free_port())
    data["providers"] = [
        {"name": name, "base_url": f"http://127.0.0.1:{ports[name]}/v1", "api_key_env": None}
        for name in PROVIDERS
    ]
    data["models"] = [
        {"name": "m", "targets": [{"provider": n, "model": "fake-gpt"} for n in PROVIDERS]}
    ]
    path = directory / "llmproxy.yaml"
    path.write_text(yaml.safe_dump(data))
    return path, data


class Bench:
    """Clients of the running health service and of the fake providers' knobs."""

    def __init__(self, target: str, ports: dict[str, int]) -> None:
        # As the router calls it: the service token may read providers and report outcomes.
        self.channel = bearer_channel(target, os.environ[SERVICE_TOKEN_ENV])
        self.api = health_pb2_grpc.ProviderHealthServiceStub(self.channel)
        # types-grpcio-health-checking declares HealthStub without its methods.
        self.health: Any = grpc_health_pb2_grpc.HealthStub(self.channel)
        self.ports = ports

    def knobs(self, provider: str, **knobs: Any) -> None:
        url = f"http://127.0.0.1:{self.ports[provider]}/_fake/knobs"
        httpx.put(url, json=knobs, timeout=5).raise_for_status()

    async def state(self, name: str) -> int:
        reply = await self.api.GetProvider(health_pb2.GetProviderRequest(name=name), timeout=5)
        return int(reply.provider.state)

    async def until(self, name: str, state: int, limit_s: float = 30) -> float:
        started = time.monotonic()
        while await self.state(name) != state:
            if time.monotonic() - started > limit_s:
                raise RuntimeError(f"{name} never reached state {state}")
            await asyncio.sleep(0.02)
        return round(time.monotonic() - started, 3)

    def calls(self) -> dict[str, Callable[[], Awaitable[Any]]]:
        outcomes = health_pb2.ReportOutcomesRequest(
            reporter="bench",
            outcomes=[
                health_pb2.CallOutcome(provider="steady", ok=True, status_code=200)
                for _ in range(100)
            ],
        )
        return {
            "ListProviders": lambda: self.api.ListProviders(health_pb2.ListProvidersRequest()),
            "GetProvider": lambda: self.api.GetProvider(
                health_pb2.GetProviderRequest(name="hangs1")
            ),
            "grpc.health/Check": lambda: self.health.Check(
                grpc_health_pb2.HealthCheckRequest(service="llmproxy.health.provider.hangs2")
            ),
            "ReportOutcomes(100)": lambda: self.api.ReportOutcomes(outcomes),
        }

    async def load(self, seconds: float, concurrency: int) -> dict[str, Any]:
        calls = self.calls()
        names = list(calls)
        samples: dict[str, list[float]] = {name: [] for name in names}
        errors = 0
        deadline = time.monotonic() + seconds

        async def worker(offset: int) -> None:
            nonlocal errors
            turn = offset
            while time.monotonic() < deadline:
                name = names[turn % len(names)]
                turn += 1
                start = time.perf_counter()
                try:
                    await calls[name]()
                except grpc.aio.AioRpcError:
                    errors += 1
                    continue
                samples[name].append((time.perf_counter() - start) * 1000)

        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        result: dict[str, Any] = {name: summary(samples[name], seconds) for name in names}
        every = [s for values in samples.values() for s in values]
        result["all"] = summary(every, seconds)
        result["errors"] = errors
        return result

    async def detection(self, rounds: int) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for outage in OUTAGES:
            down, up = [], []
            for _ in range(rounds):
                await self.until("steady", health_pb2.PROVIDER_STATE_HEALTHY)
                await asyncio.sleep(0.5)  # not aligned with the probe schedule
                self.knobs("steady", outage=outage)
                down.append(await self.until("steady", health_pb2.PROVIDER_STATE_UNHEALTHY))
                self.knobs("steady", outage="none")
                up.append(await self.until("steady", health_pb2.PROVIDER_STATE_HEALTHY))
            found[outage] = {
                "unhealthy_after_s": down,
                "max_unhealthy_after_s": max(down),
                "healthy_after_recovery_s": up,
                "max_healthy_after_recovery_s": max(up),
            }
        return found


async def run(seconds: float, concurrency: list[int], rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-health-") as tmp:
        workdir = Path(tmp)
        ports = {name: free_port() for name in PROVIDERS}
        path, data = write_config(workdir, ports)
        health = data["services"]["health"]
        target = f"127.0.0.1:{health['grpc_port']}"
        processes = [
            redis_process(data["redis"]["url"], workdir / "redis", workdir / "redis.log"),
            *(
                fake_provider_process(
                    FakeProviderSettings(port=ports[n]), ["fake-gpt"], workdir / f"{n}.log"
                )
                for n in PROVIDERS
            ),
        ]
        service = ManagedProcess(
            "health",
            [sys.executable, "-m", "llmproxy.health", "--config", str(path)],
            workdir / "health.log",
            partial(grpc_serving, target),
        )
        try:
            for process in processes:
                process.start()
            await asyncio.gather(*(p.wait_ready(30) for p in processes))
            service.start()
            await service.wait_ready(30)
            bench = Bench(target, ports)
            for name in ("hangs1", "hangs2"):
                bench.knobs(name, outage="hang")
            for name in ("hangs1", "hangs2"):
                await bench.until(name, health_pb2.PROVIDER_STATE_UNHEALTHY)
            load_before = os.getloadavg()
            answers = {f"concurrency_{c}": await bench.load(seconds, c) for c in concurrency}
            load_after = os.getloadavg()
            detection = await bench.detection(rounds)
            await bench.channel.close()
        finally:
            service.stop()
            for process in reversed(processes):
                process.stop()
    return {
        "cpus": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "seconds_per_level": seconds,
        "probes_hanging": ["hangs1", "hangs2"],
        "answers": answers,
        "detection_default_settings": detection,
    }


def main() -> None:
    # The health service and this client share the stack's service token, as in a stack.
    os.environ.setdefault(SERVICE_TOKEN_ENV, secrets.token_urlsafe(32))
    parser = argparse.ArgumentParser(prog="python -m bench.bench_health")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the load run")
    parser.add_argument(
        "--concurrency", default="8,32", help="levels of concurrent callers, comma-separated"
    )
    parser.add_argument("--rounds", type=int, default=3, help="outages per kind to time")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    result = asyncio.run(run(args.seconds, levels, args.rounds))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
