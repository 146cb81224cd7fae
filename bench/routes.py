"""The inbound APIs side by side: one uncached question through each route of the gateway.

Every route ends in the same router flow and the same provider call (the fake provider's chat
completions, or its legacy completions for /v1/completions), so the differences between rows
are each API's validation, translation and Envoy route. Each route is measured at 1 connection
(latency, and the CPU each process spends per request) and at 10 connections (throughput).
"""

from __future__ import annotations

import json
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


def _row(
    stack: Stack, url: str, body: str, headers: dict[str, str], seconds: float
) -> dict[str, Any]:
    _check_answers(url, body, headers)
    one, cpu = cpu_per_request(stack, url, body, seconds, headers)
    ten = run_wrk(url, body, 10, seconds, headers)
    return {
        "at_1_connection": one.as_dict(),
        "cpu_ms_per_request": cpu,
        "at_10_connections": ten.as_dict(),
    }


def inbound_routes(stack: Stack, key: str, seconds: float) -> dict[str, Any]:
    """Each route, whole and streamed, with its p50 and CPU next to chat completions'."""
    envoy = stack.config.envoy
    base = f"http://{envoy.host}:{envoy.listener_port}"
    rows: dict[str, Any] = {}
    for name, (path, body, extra) in ROUTES.items():
        headers = {"authorization": f"Bearer {key}", **extra}
        variants = [(name, body)]
        if name in STREAMED:
            variants.append((f"{name}_stream", {**body, "stream": True}))
        for label, payload in variants:
            rows[label] = _row(stack, base + path, json.dumps(payload), headers, seconds)
    for label, row in rows.items():
        chat = rows["chat_stream" if label.endswith("_stream") else "chat"]
        row["vs_chat"] = {
            "p50_ms": round(
                row["at_1_connection"]["p50_ms"] - chat["at_1_connection"]["p50_ms"], 3
            ),
            "cpu_ms": round(
                row["cpu_ms_per_request"]["total"] - chat["cpu_ms_per_request"]["total"], 3
            ),
        }
    return rows
