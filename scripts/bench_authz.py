"""Benchmark of the authorization service's Check: latency percentiles and checks per second.

Starts a redis-server and the authz service (its own process, as deployed) on free loopback
ports, creates API keys through the admin API, then sends Envoy-shaped CheckRequests (a
chat-completion body included) from concurrent gRPC clients and prints what it measured:

    .venv/bin/python scripts/bench_authz.py [--requests 10000] [--concurrency 1,32]

Scenarios: a key without a budget (answered from the in-process key cache: no Redis call),
and a key with daily and monthly budgets (two concurrent reads of recorded spend per check).
The client shares the machine with the service, so figures are a floor, not a ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import grpc
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2, external_auth_pb2_grpc
from google.rpc import code_pb2

from llmproxy._gen.authz.v1 import authz_pb2, authz_pb2_grpc
from llmproxy.common.net import free_port
from llmproxy.devstack.probes import grpc_serving
from llmproxy.devstack.process import ManagedProcess
from llmproxy.devstack.redis import redis_process

BODY = json.dumps(
    {
        "model": "gpt-4o-mini",
        "max_tokens": 256,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant. " * 10},
            {"role": "user", "content": "Summarise the following text, please. " * 20},
        ],
    }
).encode()


def check_request(key: str) -> external_auth_pb2.CheckRequest:
    http = attribute_context_pb2.AttributeContext.HttpRequest(
        method="POST",
        path="/v1/chat/completions",
        headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
        raw_body=BODY,
    )
    return external_auth_pb2.CheckRequest(
        attributes=attribute_context_pb2.AttributeContext(
            request=attribute_context_pb2.AttributeContext.Request(http=http)
        )
    )


async def run_scenario(
    target: str, key: str, requests: int, concurrency: int
) -> tuple[list[float], float]:
    """Latencies (seconds) of `requests` checks from `concurrency` clients, and the wall time."""
    request = check_request(key)
    latencies: list[float] = []
    remaining = requests
    async with grpc.aio.insecure_channel(target) as channel:
        stub = external_auth_pb2_grpc.AuthorizationStub(channel)
        for _ in range(200):  # warm-up: connections, caches
            await stub.Check(request)

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                start = time.perf_counter()
                reply = await stub.Check(request)
                latencies.append(time.perf_counter() - start)
                if reply.status.code != code_pb2.OK:
                    raise SystemExit(f"unexpected denial: {reply.denied_response.body}")

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return latencies, time.perf_counter() - start


def report(name: str, latencies: list[float], wall_s: float) -> None:
    ms = sorted(x * 1000 for x in latencies)
    q = statistics.quantiles(ms, n=100)
    print(
        f"{name:<50} {len(ms):>7} checks  {len(ms) / wall_s:>8.0f} checks/s   "
        f"p50 {q[49]:.2f} ms  p90 {q[89]:.2f} ms  p99 {q[98]:.2f} ms  max {ms[-1]:.2f} ms"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000, help="checks per run")
    parser.add_argument(
        "--concurrency",
        default="1,32",
        help="checks in flight, comma-separated runs (1: latency alone; more: throughput)",
    )
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench-authz-"))
    redis_url = f"redis://127.0.0.1:{free_port()}/0"
    grpc_port = free_port()
    token = secrets.token_urlsafe(24)
    env = {
        **os.environ,
        "LLMPROXY__REDIS__URL": redis_url,
        "LLMPROXY__SERVICES__AUTHZ__GRPC_PORT": str(grpc_port),
        "LLMPROXY__SERVICES__AUTHZ__METRICS_PORT": str(free_port()),
        "LLMPROXY__LOG_LEVEL": "WARNING",  # one log line per denial would be measured too
        "LLMPROXY_AUTHZ_HMAC_SECRET": secrets.token_urlsafe(32),
        "LLMPROXY_ADMIN_TOKEN": token,
        "LLMPROXY_SERVICE_TOKEN": secrets.token_urlsafe(32),  # every service needs one
    }
    target = f"127.0.0.1:{grpc_port}"
    redis = redis_process(redis_url, workdir / "redis", workdir / "redis.log")
    authz = ManagedProcess(
        "authz",
        [sys.executable, "-m", "llmproxy.authz"],
        workdir / "authz.log",
        partial(grpc_serving, target),
        env,
    )
    redis.start()
    try:
        await redis.wait_ready(15)
        authz.start()
        await authz.wait_ready(30)
        metadata = (("authorization", f"Bearer {token}"),)
        async with grpc.aio.insecure_channel(target) as channel:
            admin = authz_pb2_grpc.AuthzServiceStub(channel)
            plain = await admin.CreateKey(
                authz_pb2.CreateKeyRequest(tenant="bench"), metadata=metadata
            )
            budgeted = await admin.CreateKey(
                authz_pb2.CreateKeyRequest(
                    tenant="bench", budget=authz_pb2.Budget(daily_usd=100, monthly_usd=1000)
                ),
                metadata=metadata,
            )
        load = os.getloadavg()
        print(
            f"authz Check benchmark: {args.requests} checks per run, {len(BODY)}-byte body, "
            f"{os.cpu_count()} CPUs, load average before {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
        )
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            for name, key in (
                ("cached key, no budget", plain.secret),
                ("cached key + budget (2 Redis reads)", budgeted.secret),
            ):
                latencies, wall = await run_scenario(target, key, args.requests, concurrency)
                report(f"{name}, {concurrency} in flight", latencies, wall)
        print(f"load average after: {os.getloadavg()[0]:.2f}")
    finally:
        authz.stop()
        redis.stop()


if __name__ == "__main__":
    asyncio.run(main())
