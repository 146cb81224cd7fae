"""Tracing benchmark: the gateway's latency and throughput with tracing off, then on.

Starts the stack twice on free loopback ports (as bench_router does), the second time exporting
spans (sample_ratio 1 unless --sample-ratio) to an OTLP/gRPC receiver in this process (whose
CPU, decoding every span, is part of the figures), and measures
uncached chat completions through Envoy with wrk at 1 and 10 connections. Prints one JSON
document; the machine's cores are shared by everything, so compare the two runs, not absolutes.

    .venv/bin/python -m bench.bench_tracing [--seconds 10] [--sample-ratio 0.1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from bench.bench_router import bench_config, chat
from bench.wrk import run_wrk
from llmproxy.config import load_config
from llmproxy.devstack.authz import create_demo_key
from llmproxy.devstack.stack import Stack
from tests.harness.otlp_receiver import OtlpReceiver, otlp_receiver

CONNECTIONS = (1, 10)


async def measure(environ: dict[str, str], seconds: float) -> list[dict[str, Any]]:
    """wrk through the gateway of a fresh stack started with environ."""
    with tempfile.TemporaryDirectory() as tmp:
        path = bench_config(Path(tmp))
        stack = Stack(load_config(path, environ), path, Path(tmp) / "run", environ)
        await stack.start()
        try:
            token = stack.environ[stack.config.control.admin_token_env]
            key = await create_demo_key(stack.config, token)
            envoy = stack.config.envoy
            url = f"http://{envoy.host}:{envoy.listener_port}/v1/chat/completions"
            body = chat("What does tracing cost?", temperature=1.0)
            headers = {"authorization": f"Bearer {key}"}
            return [run_wrk(url, body, c, seconds, headers).as_dict() for c in CONNECTIONS]
        finally:
            stack.stop()


async def traced(
    environ: dict[str, str], seconds: float, receiver: OtlpReceiver, ratio: float
) -> dict[str, Any]:
    """The same with spans exported to receiver at ratio; also counts spans per trace."""
    env = {
        **environ,
        "LLMPROXY__TRACING__OTLP_ENDPOINT": receiver.endpoint,
        "LLMPROXY__TRACING__EXPORT_INTERVAL_S": "1",
        "LLMPROXY__TRACING__SAMPLE_RATIO": str(ratio),
    }
    rows = await measure(env, seconds)
    await asyncio.sleep(3)  # the last batches
    spans = receiver.spans()
    traces = {s.trace_id for s in spans if s.service == "envoy" and not s.parent_span_id}
    return {
        "wrk": rows,
        "spans": len(spans),
        "traces": len(traces),
        "spans_per_trace": round(len(spans) / max(1, len(traces)), 1),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each wrk run")
    parser.add_argument("--sample-ratio", type=float, default=1.0, help="tracing.sample_ratio")
    args = parser.parse_args()
    environ = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    result: dict[str, Any] = {
        "benchmark": "tracing",
        "load_average_at_start": os.getloadavg(),
        "tracing_off": await measure(environ, args.seconds),
    }
    with otlp_receiver() as receiver:
        result["tracing_on"] = await traced(environ, args.seconds, receiver, args.sample_ratio)
        result["tracing_on"]["sample_ratio"] = args.sample_ratio
    result["load_average_at_end"] = os.getloadavg()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
