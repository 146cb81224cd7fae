"""The inbound APIs side by side: one uncached question through each route of the gateway.

Every route ends in the same router flow and the same provider call (the fake provider's chat
completions, or its legacy completions for /v1/completions), so the differences between rows
are each API's validation, translation and Envoy route. Each route is measured at 1 connection
(latency, and the CPU every process spends per request) and at 10 connections (throughput), in
rounds that alternate the routes, so that the machine's drifting load falls on each alike.
"""

from __future__ import annotations

import json
import statistics
from typing import Any

import httpx

from bench.proc import cpu_per_request
from bench.wrk import run_wrk
from llmproxy.devstack.stack import Stack

QUESTION = "What does each inbound API cost?"
MODEL = "gpt-4o-mini"
# temperature 1: never cached, so every request reaches the provider.
ROUTES: dict[str, tuple[str, dict[str, Any], dict[str, str]]] = {
    "chat": (
        "/v1/chat/completions",
        {"model": MODEL, "temperature": 1, "messages": [{"role": "user", "content": QUESTION}]},
        {},
    ),
    "responses": ("/v1/responses", {"model": MODEL, "temperature": 1, "input": QUESTION}, {}),
    "messages": (
        "/v1/messages",
        {
            "model": MODEL,
            "temperature": 1,
            "max_tokens": 256,
            "messages": [{"role": "user", "content": QUESTION}],
        },
        {"anthropic-version": "2023-06-01"},
    ),
    "completions": ("/v1/completions", {"model": MODEL, "temperature": 1, "prompt": QUESTION}, {}),
}
STREAMED = ("chat", "responses", "messages")


def _check_answers(url: str, body: str, headers: dict[str, str]) -> None:
    response = httpx.post(
        url, content=body, headers={**headers, "content-type": "application/json"}
    )
    if response.status_code != 200:
        raise SystemExit(f"{url} answered {response.status_code}: {response.text[:300]}")


def _measure(
    stack: Stack, url: str, body: str, headers: dict[str, str], seconds: float
) -> dict[str, Any]:
    one, cpu = cpu_per_request(stack, url, body, seconds, headers)
    ten = run_wrk(url, body, 10, seconds, headers)
    return {
        "p50_ms": one.p50_ms,
        "p99_ms": one.p99_ms,
        "cpu_ms": cpu["total"],
        "router_cpu_ms": cpu.get("router", 0.0),
        "requests_per_s_at_10": ten.requests_per_s,
    }


def inbound_routes(stack: Stack, key: str, seconds: float, rounds: int = 3) -> dict[str, Any]:
    """Each route, whole and streamed, measured in alternating rounds (the machine's load drifts
    between runs): the median of each figure, and its difference from chat completions'."""
    envoy = stack.config.envoy
    base = f"http://{envoy.host}:{envoy.listener_port}"
    variants: list[tuple[str, str, str, dict[str, str]]] = []
    for name, (path, body, extra) in ROUTES.items():
        headers = {"authorization": f"Bearer {key}", **extra}
        variants.append((name, base + path, json.dumps(body), headers))
        if name in STREAMED:
            streamed = json.dumps({**body, "stream": True})
            variants.append((f"{name}_stream", base + path, streamed, headers))
    for _, url, body, headers in variants:
        _check_answers(url, body, headers)
    samples: dict[str, list[dict[str, Any]]] = {label: [] for label, *_ in variants}
    for _ in range(rounds):
        for label, url, body, headers in variants:
            samples[label].append(_measure(stack, url, body, headers, seconds))
    rows = {
        label: {figure: round(statistics.median(s[figure] for s in runs), 3) for figure in runs[0]}
        for label, runs in samples.items()
    }
    for label, row in rows.items():
        chat = rows["chat_stream" if label.endswith("_stream") else "chat"]
        row["p50_vs_chat_ms"] = round(row["p50_ms"] - chat["p50_ms"], 3)
        row["cpu_vs_chat_ms"] = round(row["cpu_ms"] - chat["cpu_ms"], 3)
    return {"rounds": rounds, "seconds_per_run": seconds, "routes": rows}
