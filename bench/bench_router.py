"""Router benchmark: gateway overhead, cache-hit latency, and hit ratio on a Zipf replay.

Starts its own stack (Redis, fake provider, the five services, Envoy) on free loopback ports
and prints one JSON document. Latencies come from wrk (C), so the load generator costs little
CPU; the machine's two cores are still shared by wrk, Envoy, the router and the fake provider,
which the figures include.

It also breaks one uncached request down: the same request at 1 connection to each hop on
its own (the provider; Envoy's egress listener in front of it; the router over gRPC without
Envoy, authz and the rate limiter; the floor of such a hop, a bare grpc.aio handler making the
same provider call (the router role of bench/floor_servers.py); the whole gateway), and the CPU
each process of the stack spends per gateway request (from /proc), which is where the time goes
on two shared cores. Last, the floor of the design: the same gateway with authz, the rate
limiter and the router replaced by those bare stand-ins, measured the same way.

    .venv/bin/python -m bench.bench_router [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import httpx
import yaml
from google.api import httpbody_pb2

from bench.ports import wait_port
from bench.proc import cpu_per_request
from bench.routes import inbound_routes
from bench.wrk import run_wrk
from llmproxy._gen.router.v1 import openai_pb2, openai_pb2_grpc
from llmproxy.common.net import free_port
from llmproxy.config import DEMO_PROVIDER, load_config
from llmproxy.devstack.authz import create_demo_key
from llmproxy.devstack.freeports import with_free_ports
from llmproxy.devstack.probes import grpc_serving
from llmproxy.devstack.process import ManagedProcess
from llmproxy.devstack.stack import Stack

CONCURRENCY = (1, 10, 100)
ZIPF_REQUESTS = 10_000
ZIPF_PROMPTS = 2_000
ZIPF_S = 1.1


def bench_config(directory: Path) -> Path:
    data = with_free_ports()
    data["log_level"] = "WARNING"
    path = directory / "llmproxy.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def chat(content: str, temperature: float) -> str:
    return json.dumps(
        {
            "model": "gpt-4o-mini",
            "temperature": temperature,
            "messages": [{"role": "user", "content": content}],
        }
    )


def ttft(stack: Stack, key: str, requests: int = 100) -> dict[str, Any]:
    """Time to first SSE chunk, through the gateway and directly, one request at a time."""
    envoy, fake = stack.config.envoy, stack.config.fake_provider
    targets = {
        "gateway": (
            f"http://{envoy.host}:{envoy.listener_port}/v1/chat/completions",
            {"authorization": f"Bearer {key}"},
        ),
        "direct": (f"http://{fake.host}:{fake.port}/v1/chat/completions", {}),
    }
    body = {
        "model": "gpt-4o-mini",
        "stream": True,
        "temperature": 1,
        "messages": [{"role": "user", "content": "How fast is the first token?"}],
    }
    result: dict[str, Any] = {}
    with httpx.Client(timeout=30) as client:
        for name, (url, headers) in targets.items():
            samples = []
            for _ in range(requests):
                start = time.perf_counter()
                first: float | None = None
                with client.stream("POST", url, json=body, headers=headers) as response:
                    # Read to the end, so the connection is reused for the next request.
                    for line in response.iter_lines():
                        if first is None and line.startswith("data: "):
                            first = time.perf_counter() - start
                if first is not None:
                    samples.append(first * 1000)
            samples.sort()
            result[name] = {
                "p50_ms": round(samples[len(samples) // 2], 3),
                "p99_ms": round(samples[int(len(samples) * 0.99) - 1], 3),
            }
    result["overhead_p50_ms"] = round(result["gateway"]["p50_ms"] - result["direct"]["p50_ms"], 3)
    return result


def overhead(stack: Stack, key: str, seconds: float) -> list[dict[str, Any]]:
    """Through Envoy + router (uncached, temperature 1) against the fake provider directly."""
    envoy, fake = stack.config.envoy, stack.config.fake_provider
    gateway = f"http://{envoy.host}:{envoy.listener_port}/v1/chat/completions"
    direct = f"http://{fake.host}:{fake.port}/v1/chat/completions"
    body = chat("What is the gateway overhead?", temperature=1.0)
    rows = []
    for connections in CONCURRENCY:
        via = run_wrk(gateway, body, connections, seconds, {"authorization": f"Bearer {key}"})
        raw = run_wrk(direct, body, connections, seconds)
        rows.append(
            {
                "concurrency": connections,
                "gateway": via.as_dict(),
                "direct": raw.as_dict(),
                "overhead_p50_ms": round(via.p50_ms - raw.p50_ms, 3),
                "overhead_p99_ms": round(via.p99_ms - raw.p99_ms, 3),
            }
        )
    return rows


def _percentiles(samples_ms: list[float]) -> dict[str, float]:
    samples_ms = sorted(samples_ms)
    return {
        "p50_ms": round(samples_ms[len(samples_ms) // 2], 3),
        "p99_ms": round(samples_ms[max(0, int(len(samples_ms) * 0.99) - 1)], 3),
    }


def _router_grpc(target: str, body: str, seconds: float) -> dict[str, Any]:
    """The router alone: sequential gRPC calls straight to it (no Envoy, authz or limiter).

    From a Python client, whose own cost (a few tenths of a ms) is in the figures.
    """
    request = openai_pb2.CreateChatCompletionRequest(
        body=httpbody_pb2.HttpBody(content_type="application/json", data=body.encode())
    )
    metadata = (("x-llmproxy-tenant", "bench"), ("x-llmproxy-key-id", "bench"))
    with grpc.insecure_channel(target) as channel:
        stub = openai_pb2_grpc.OpenAIServiceStub(channel)
        for _ in range(20):  # warm up the channel and the router's pools
            list(stub.CreateChatCompletion(request, metadata=metadata))
        totals, firsts = [], []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            start = time.perf_counter()
            first = None
            for _reply in stub.CreateChatCompletion(request, metadata=metadata):
                first = first or time.perf_counter() - start
            totals.append((time.perf_counter() - start) * 1000)
            firsts.append((first or 0) * 1000)
    return {"whole": _percentiles(totals), "first_message": _percentiles(firsts)}


def _floor_process(stack: Stack, role: str, port: int, provider_url: str) -> ManagedProcess:
    """bench/floor_servers.py in a role, on the port of the service it stands in for."""
    args = [provider_url] if role == "router" else []
    argv = [sys.executable, "-m", "bench.floor_servers", role, str(port), *args]
    name = f"{role}-floor-{port}"
    ready = partial(grpc_serving, f"127.0.0.1:{port}")
    return ManagedProcess(name, argv, stack.workdir / "logs" / f"{name}.log", ready, stack.environ)


@contextlib.contextmanager
def _router_floor(stack: Stack, provider_url: str) -> Iterator[str]:
    """The router's stand-in on a free port: the floor of a router hop."""
    port = free_port()
    server = _floor_process(stack, "router", port, provider_url)
    server.start()
    try:
        wait_port(port)
        yield f"127.0.0.1:{port}"
    finally:
        server.stop()


def _egress_url(stack: Stack) -> str:
    envoy = stack.config.envoy
    return f"http://{envoy.host}:{envoy.egress_port}/{DEMO_PROVIDER}/chat/completions"


def breakdown(stack: Stack, key: str, seconds: float) -> dict[str, Any]:
    """One uncached request, hop by hop at 1 connection, and the CPU per gateway request."""
    envoy, fake = stack.config.envoy, stack.config.fake_provider
    body = chat("Where does the time go?", temperature=1.0)
    stream_body = json.dumps({**json.loads(body), "stream": True})
    auth = {"authorization": f"Bearer {key}"}
    urls = {
        "provider": f"http://{fake.host}:{fake.port}/v1/chat/completions",
        "egress_to_provider": _egress_url(stack),
    }
    hops: dict[str, Any] = {
        name: run_wrk(url, body, 1, seconds).as_dict() for name, url in urls.items()
    }
    router = stack.config.services.router
    hops["router_grpc"] = _router_grpc(f"{router.host}:{router.grpc_port}", body, seconds)
    hops["router_grpc_stream"] = _router_grpc(
        f"{router.host}:{router.grpc_port}", stream_body, seconds
    )
    with _router_floor(stack, urls["egress_to_provider"]) as floor:
        hops["router_floor_grpc"] = _router_grpc(floor, body, seconds)
    gateway = f"http://{envoy.host}:{envoy.listener_port}/v1/chat/completions"
    cpu: dict[str, Any] = {}
    for name, payload in (("gateway", body), ("gateway_stream", stream_body)):
        result, cpu[name] = cpu_per_request(stack, gateway, payload, seconds, auth)
        hops[name] = result.as_dict()
    return {"latency_at_1_connection": hops, "cpu_ms_per_request": cpu}


async def floor(stack: Stack, key: str, seconds: float) -> dict[str, Any]:
    """The same gateway with bare stand-ins for authz, the rate limiter and the router.

    bench/floor_servers.py does no work of its own, so this is the floor of the design on this
    machine: Envoy and three Python gRPC hops, the router's provider call through the egress
    included. Run it last: it stops those three services (Envoy and the rest stay as they were).
    """
    services = stack.config.services
    ports = {
        "authz": [services.authz.grpc_port],
        "ratelimit": services.ratelimit.grpc_ports(),
        "router": [services.router.grpc_port],
    }
    for name in [n for n in stack.processes if n.split("-")[0] in ports]:
        stack.processes.pop(name).stop()
    stand_ins = [
        _floor_process(stack, role, port, _egress_url(stack))
        for role, role_ports in ports.items()
        for port in role_ports
    ]
    for process in stand_ins:
        stack.processes[process.name] = process
        process.start()
    await asyncio.gather(*(process.wait_ready(30) for process in stand_ins))
    envoy, fake = stack.config.envoy, stack.config.fake_provider
    gateway = f"http://{envoy.host}:{envoy.listener_port}/v1/chat/completions"
    body = chat("Where does the time go?", temperature=1.0)
    auth = {"authorization": f"Bearer {key}"}
    await _until_answered(gateway, body, auth)
    via, cpu = cpu_per_request(stack, gateway, body, seconds, auth)
    direct = run_wrk(f"http://{fake.host}:{fake.port}/v1/chat/completions", body, 1, seconds)
    return {
        "time_to_first_token": ttft(stack, key),
        "gateway_at_1_connection": via.as_dict(),
        "direct_at_1_connection": direct.as_dict(),
        "overhead_p50_ms": round(via.p50_ms - direct.p50_ms, 3),
        "cpu_ms_per_request": cpu,
    }


async def _until_answered(url: str, body: str, headers: dict[str, str]) -> None:
    """Wait until Envoy reaches the stand-ins (its pools reconnect, its health checks pass)."""
    async with httpx.AsyncClient(timeout=5) as client:
        for _ in range(300):
            response = await client.post(url, content=body, headers=headers)
            if response.status_code == 200:
                return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"the floor gateway answers {response.status_code}: {response.text}")


def cache_hits(stack: Stack, key: str, seconds: float) -> list[dict[str, Any]]:
    """Latency of answers served from the cache (one deterministic request, repeated)."""
    envoy = stack.config.envoy
    url = f"http://{envoy.host}:{envoy.listener_port}/v1/chat/completions"
    body = chat("Cache me, please.", temperature=0)
    headers = {"authorization": f"Bearer {key}"}
    httpx.post(url, content=body, headers={**headers, "content-type": "application/json"})
    return [run_wrk(url, body, c, seconds, headers).as_dict() for c in (1, 10)]


async def zipf_replay(stack: Stack, key: str) -> dict[str, Any]:
    """10,000 requests drawn from Zipf(1.1) over 2,000 prompts; the share answered by the cache."""
    envoy = stack.config.envoy
    url = f"http://{envoy.host}:{envoy.listener_port}/v1/chat/completions"
    rng = random.Random(7)
    weights = [1 / (rank**ZIPF_S) for rank in range(1, ZIPF_PROMPTS + 1)]
    draws = rng.choices(range(ZIPF_PROMPTS), weights=weights, k=ZIPF_REQUESTS)
    outcomes: dict[str, int] = {}
    queue: asyncio.Queue[int] = asyncio.Queue()
    for draw in draws:
        queue.put_nowait(draw)

    async def worker(client: httpx.AsyncClient) -> None:
        while not queue.empty():
            prompt = queue.get_nowait()
            response = await client.post(
                url,
                content=chat(f"Question number {prompt}?", 0),
                headers={"content-type": "application/json", "authorization": f"Bearer {key}"},
            )
            result = response.headers.get("x-cache", f"status {response.status_code}")
            outcomes[result] = outcomes.get(result, 0) + 1

    async with httpx.AsyncClient(timeout=30) as client:
        await asyncio.gather(*(worker(client) for _ in range(8)))
    return {
        "requests": ZIPF_REQUESTS,
        "distinct_prompts_drawn": len(set(draws)),
        "outcomes": outcomes,
        "hit_ratio": round(outcomes.get("HIT", 0) / ZIPF_REQUESTS, 4),
        "goal": 0.85,
    }


async def _ttft(stack: Stack, key: str, seconds: float) -> dict[str, Any]:
    return ttft(stack, key)


async def _sync(section: Any, stack: Stack, key: str, seconds: float) -> Any:
    return section(stack, key, seconds)


async def _zipf(stack: Stack, key: str, seconds: float) -> dict[str, Any]:
    return await zipf_replay(stack, key)


SECTIONS: dict[str, Callable[[Stack, str, float], Awaitable[Any]]] = {
    "time_to_first_token": _ttft,
    "breakdown": partial(_sync, breakdown),
    "gateway_overhead": partial(_sync, overhead),
    "inbound_routes": partial(_sync, inbound_routes),
    "cache_hit_latency": partial(_sync, cache_hits),
    "zipf_replay": _zipf,
    "floor": floor,
}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each wrk run")
    parser.add_argument(
        "--only", choices=sorted(SECTIONS), action="append", help="run only these sections"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = bench_config(Path(tmp))
        environ = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
        stack = Stack(load_config(path, environ), path, Path(tmp) / "run", environ)
        await stack.start()
        try:
            token = stack.environ[stack.config.control.admin_token_env]
            key = await create_demo_key(stack.config, token)
            result: dict[str, Any] = {
                "benchmark": "router",
                "load_average_at_start": os.getloadavg(),
                "cpu_count": os.cpu_count(),
            }
            # In this order: floor replaces the services, so it comes last.
            for name, section in SECTIONS.items():
                if args.only is None or name in args.only:
                    result[name] = await section(stack, key, args.seconds)
        finally:
            stack.stop()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
