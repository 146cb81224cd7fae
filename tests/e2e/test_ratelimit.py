"""Rate limits through Envoy, as a client sees them: headers, 429s, tokens, two instances.

A stack of its own: two ratelimit processes (both endpoints of Envoy's cluster) and limits low
enough to reach in a few requests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from llmproxy.devstack.stack import Stack
from tests.e2e.conftest import create_key
from tests.harness import logs
from tests.harness.configs import two_limiters_data, write_config
from tests.harness.control import admin_header, service_header
from tests.harness.waiting import eventually_sync

ROOT = Path(__file__).resolve().parents[2]
GRPCURL = str(Path(sys.executable).parent / "grpcurl")
LIMITS = """
domain: llmproxy
descriptors:
  - key: tenant
    value: rl-requests
    rate_limit: {unit: minute, requests_per_unit: 1000}
    descriptors:
      - key: key_id
        rate_limit: {unit: minute, requests_per_unit: 3, algorithm: sliding_log}
  - key: tokens
    descriptors:
      - key: tenant
        value: rl-tokens
        rate_limit: {unit: minute, requests_per_unit: 2500}
"""
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1000}


@pytest.fixture(scope="module")
def rl_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The stack with two ratelimit instances and LIMITS."""
    workdir = tmp_path_factory.mktemp("rl-stack")
    limits = workdir / "ratelimit.yaml"
    limits.write_text(LIMITS)
    path, config = write_config(workdir, two_limiters_data(limits))
    stack = Stack(config, path, workdir, os.environ)
    import asyncio  # noqa: PLC0415

    asyncio.run(stack.start(timeout_s=60))
    try:
        yield stack
    finally:
        stack.stop()


@pytest.fixture
def gateway(request: pytest.FixtureRequest, rl_stack: Stack) -> str:
    logs.watch(request.node, *rl_stack.processes.values())
    envoy = rl_stack.config.envoy
    return f"http://{envoy.host}:{envoy.listener_port}/v1"


def post(gateway: str, key: str) -> httpx.Response:
    return httpx.post(
        f"{gateway}/chat/completions",
        json=CHAT,
        headers={"authorization": f"Bearer {key}"},
        timeout=30,
    )


def test_responses_carry_ratelimit_headers_and_the_429_is_openai_shaped(
    rl_stack: Stack, gateway: str
) -> None:
    key = create_key(rl_stack, tenant="rl-requests", user="u", name="rl").secret
    answers = [post(gateway, key) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert [a.headers["x-ratelimit-remaining"] for a in answers] == ["2", "1", "0"]
    assert answers[0].headers["x-ratelimit-limit"].startswith("3, ")  # then every quota
    assert "3;w=60" in answers[0].headers["x-ratelimit-limit"]
    assert 0 < int(answers[0].headers["x-ratelimit-reset"]) <= 60

    refused = post(gateway, key)
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["x-ratelimit-remaining"] == "0"
    error = refused.json()["error"]
    assert error["type"] == "rate_limit_exceeded"
    assert error["code"] == "rate_limit_exceeded"
    assert error["message"].startswith("Rate limit reached for tenant=rl-requests, key_id=")
    assert "on requests per minute: limit 3" in error["message"]

    client = openai.OpenAI(base_url=gateway, api_key=key, max_retries=0)
    with pytest.raises(openai.RateLimitError) as raised:
        client.chat.completions.create(**CHAT)  # type: ignore[call-overload]
    assert "Rate limit reached" in str(raised.value)


def test_token_limits_reserve_the_estimate_before_the_call(rl_stack: Stack, gateway: str) -> None:
    """Concurrent requests hold their estimates (prompt + max_tokens 1000) while in flight: two
    fit in 2500 tokens, a third does not. Once they are answered the router reconciles each
    reservation with the few tokens really used, so later requests fit again."""
    key = create_key(rl_stack, tenant="rl-tokens", user="u", name="tokens").secret
    fake = rl_stack.config.fake_provider
    knobs = f"http://{fake.host}:{fake.port}/_fake/knobs"
    # Slow enough to overlap, fast enough that health probes keep the provider HEALTHY.
    httpx.put(knobs, json={"latency_ms": 600}).raise_for_status()
    try:
        with ThreadPoolExecutor(3) as pool:
            codes = sorted(r.status_code for r in pool.map(lambda _: post(gateway, key), range(3)))
    finally:
        httpx.put(knobs, json={"latency_ms": 0}).raise_for_status()
    assert codes == [200, 200, 429]
    # Reconciliation runs just after each answer: two more requests fit again, soon.
    for _ in range(2):
        eventually_sync(
            lambda: post(gateway, key).status_code,
            lambda status: status == 200,
            what="a request fitting again (reservations reconciled)",
            interval_s=0.2,
        )


def grpcurl(
    stack: Stack, method: str, body: str = "{}", header: str | None = None
) -> subprocess.CompletedProcess[str]:
    """A control call through Envoy, as the admin unless header says otherwise."""
    envoy = stack.config.envoy
    return subprocess.run(
        [
            GRPCURL,
            "-plaintext",
            "-protoset",
            str(ROOT / "envoy" / "llmproxy.protoset"),
            "-H",
            header or admin_header(stack),
            "-d",
            body,
            f"{envoy.host}:{envoy.control_port}",
            f"llmproxy.ratelimit.v1.RateLimitControlService/{method}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_the_control_api_through_envoy(rl_stack: Stack, gateway: str) -> None:
    key = create_key(rl_stack, tenant="rl-requests", user="u", name="control")
    post(gateway, key.secret)
    descriptor = json.dumps(
        {
            "descriptor": {
                "entries": [
                    {"key": "tenant", "value": "rl-requests"},
                    {"key": "key_id", "value": key.key.key_id},
                ]
            }
        }
    )
    limits = json.loads(grpcurl(rl_stack, "GetLimits").stdout)
    assert limits["domain"] == "llmproxy"
    assert len(limits["limits"]) == 3
    usage = grpcurl(rl_stack, "GetUsage", descriptor)
    assert usage.returncode == 0, usage.stderr
    assert json.loads(usage.stdout)["used"] == "1"
    reset = grpcurl(rl_stack, "ResetUsage", descriptor)
    assert json.loads(reset.stdout)["existed"] is True
    reload = grpcurl(rl_stack, "ReloadConfig")
    assert reload.returncode == 0, reload.stderr
    assert json.loads(reload.stdout)["limit_count"] == 3, reload.stdout
    # Reconciliation is the router's: only the service token may do it, not even the admin.
    item = {
        "descriptors": [{"entries": [{"key": "tokens"}, {"key": "tenant", "value": "rl-tokens"}]}],
        "reserved_tokens": 1000,
        "actual_tokens": 10,
    }
    as_admin = grpcurl(rl_stack, "ReconcileTokensBatch", json.dumps({"items": [item]}))
    assert "Code: PermissionDenied" in as_admin.stderr
    assert "ReconcileTokensBatch needs the stack's service token" in as_admin.stderr
    internal = service_header(rl_stack)
    reconcile = grpcurl(
        rl_stack,
        "ReconcileTokens",
        json.dumps(
            {
                "descriptors": [
                    {
                        "entries": [
                            {"key": "tokens", "value": "estimate"},
                            {"key": "tenant", "value": "rl-tokens"},
                        ]
                    }
                ],
                "reserved_tokens": 1000,
                "actual_tokens": 10,
            }
        ),
        internal,
    )
    assert reconcile.returncode == 0, reconcile.stderr
    batch = grpcurl(rl_stack, "ReconcileTokensBatch", json.dumps({"items": [item, item]}), internal)
    assert batch.returncode == 0, batch.stderr
    assert json.loads(batch.stdout)["applied_items"] == 2
    refused = grpcurl(rl_stack, "ReconcileTokensBatch", json.dumps({"items": [item, {}]}), internal)
    assert refused.returncode != 0
    assert "items[1]: no descriptors to reconcile" in refused.stderr
    missing = grpcurl(rl_stack, "GetUsage", '{"descriptor": {"entries": [{"key": "nope"}]}}')
    assert missing.returncode != 0
    assert "no limit applies to the descriptor nope=" in missing.stderr


def test_both_instances_decide(rl_stack: Stack, gateway: str) -> None:
    key = create_key(rl_stack, tenant="rl-other", user="u", name="spread").secret
    for _ in range(20):
        post(gateway, key)
    settings = rl_stack.config.services.ratelimit
    for index in range(2):
        port = settings.instance(index).metrics_port
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        decided = [
            float(line.split()[-1])
            for line in text.splitlines()
            if line.startswith("llmproxy_ratelimit_decisions_total{")
        ]
        assert sum(decided) > 0, f"instance {index} decided nothing"
