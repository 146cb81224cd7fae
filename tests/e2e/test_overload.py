"""A burst far beyond what the checks can absorb: the limit holds and every refusal is clean.

Its own stack: two ratelimit instances and a limit of LIMIT requests a minute per tenant
(sliding log, exact). Each round sends BURST concurrent chat requests at once with a fresh
tenant's key, so each round is that tenant's first traffic (and the authz service's first
sight of the key): exactly LIMIT are answered 200, and every other answer is a 429 or 503 with
`retry-after` and OpenAI's error body, whichever check refused it or could not finish in time.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from llmproxy.devstack.stack import Stack
from tests.e2e.conftest import create_key
from tests.harness.configs import two_limiters_data

LIMIT = 100
BURST = 500
ROUNDS = 5
LIMITS = f"""
domain: llmproxy
descriptors:
  - key: route
    value: openai
    rate_limit: {{unit: second, requests_per_unit: 20000}}
  - key: tenant
    rate_limit: {{unit: minute, requests_per_unit: {LIMIT}, algorithm: sliding_log}}
"""
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}
# Envoy's counters that say which check answered what (shown with each round's counts).
STATS_FILTER = (
    r"^(http\.client\.ext_authz\.|cluster\.llmproxy_router\.ratelimit\.|"
    r"cluster\.llmproxy_(authz|ratelimit)\.upstream_rq_(total|timeout|pending_overflow))"
)


@pytest.fixture
def own_stack_data(tmp_path: Path) -> dict[str, Any]:
    """The stack of this module: two rate limiter instances and LIMITS."""
    limits = tmp_path / "ratelimit.yaml"
    limits.write_text(LIMITS)
    return two_limiters_data(limits)


# What a refusal's error body says its type is, by status.
ERROR_TYPES = {429: "rate_limit_exceeded", 503: "service_unavailable"}


@dataclass(frozen=True)
class Answer:
    """What the client got for one request."""

    status: int
    retry_after: str | None
    body: bytes

    def problem(self) -> str | None:
        """Why this answer is neither a 200 nor a clean refusal (None when it is either)."""
        if self.status == 200:
            return None
        if self.status not in ERROR_TYPES:
            return f"status {self.status}"
        if self.retry_after is None or not self.retry_after.isdigit():
            return f"{self.status} with retry-after {self.retry_after!r}"
        try:
            error = json.loads(self.body)["error"]
        except (ValueError, KeyError, TypeError):
            return f"{self.status} with body {self.body[:200]!r}"
        if not error.get("message") or error.get("type") != ERROR_TYPES[self.status]:
            return f"{self.status} with error {error!r}"
        return None


async def _burst(url: str, key: str) -> list[Answer]:
    # One connection per request, all opened at once: the burst reaches Envoy together.
    limits = httpx.Limits(max_connections=BURST, max_keepalive_connections=BURST)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:

        async def one() -> Answer:
            response = await client.post(url, json=CHAT, headers={"authorization": f"Bearer {key}"})
            return Answer(
                response.status_code, response.headers.get("retry-after"), response.content
            )

        return await asyncio.gather(*(one() for _ in range(BURST)))


async def _counters(client: httpx.AsyncClient, stack: Stack) -> Counter[str]:
    """Envoy's counters of the checks' outcomes and the rate limiter's own, for diagnosis."""
    envoy = stack.config.envoy
    stats = await client.get(
        f"http://{envoy.host}:{envoy.admin_port}/stats", params={"filter": STATS_FILTER}
    )
    found: Counter[str] = Counter()
    for line in stats.text.splitlines():
        name, _, value = line.partition(": ")
        if value.isdigit():
            found[name] = int(value)
    settings = stack.config.services.ratelimit
    for index in range(settings.instances):
        port = settings.instance(index).metrics_port
        metrics = await client.get(f"http://127.0.0.1:{port}/metrics")
        for line in metrics.text.splitlines():
            if line.startswith("llmproxy_ratelimit_decisions_total{"):
                outcome = line.split('outcome="')[1].split('"')[0]
                found[f"ratelimit.decisions.{outcome}"] += int(float(line.split()[-1]))
    return found


async def test_a_burst_never_exceeds_the_limit_and_every_refusal_says_when_to_retry(
    own_stack: Stack,
) -> None:
    envoy = own_stack.config.envoy
    url = f"http://{envoy.host}:{envoy.listener_port}/v1/chat/completions"
    rounds = []
    async with httpx.AsyncClient(timeout=10) as diagnosis:
        before = await _counters(diagnosis, own_stack)
        for number in range(1, ROUNDS + 1):
            key = await asyncio.to_thread(
                create_key, own_stack, tenant=f"burst-{number}", user="u", name="burst"
            )
            answers = await _burst(url, key.secret)
            after = await _counters(diagnosis, own_stack)
            statuses = dict(Counter(a.status for a in answers))
            problems = dict(Counter(p for a in answers if (p := a.problem()) is not None))
            checks = {k: after[k] - before[k] for k in after if after[k] != before[k]}
            before = after
            rounds.append((statuses, problems, checks))
            print(f"round {number}: {statuses} problems {problems} counters {checks}")
    for statuses, problems, _ in rounds:
        assert statuses.get(200) == LIMIT, rounds
        assert not problems, rounds
