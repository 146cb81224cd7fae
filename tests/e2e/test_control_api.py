"""The README's grpcurl commands, run against Envoy's control listener on the running stack."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx

from llmproxy.devstack.stack import Stack
from tests.harness.control import admin_header

ROOT = Path(__file__).resolve().parents[2]
GRPCURL = str(Path(sys.executable).parent / "grpcurl")


def grpcurl(stack: Stack, method: str, body: str = "{}") -> dict[str, object]:
    envoy = stack.config.envoy
    done = subprocess.run(
        [
            GRPCURL,
            "-plaintext",
            "-protoset",
            str(ROOT / "envoy" / "llmproxy.protoset"),
            "-H",
            admin_header(stack),
            "-d",
            body,
            f"{envoy.host}:{envoy.control_port}",
            method,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


def test_router_lists_models(stack_logs: Stack) -> None:
    reply = grpcurl(stack_logs, "llmproxy.router.v1.RouterService/ListModels")
    names = [m["name"] for m in reply["models"]]  # type: ignore[attr-defined]
    assert names == [m.name for m in stack_logs.config.models]


def test_ratelimit_reports_its_domain(stack_logs: Stack) -> None:
    reply = grpcurl(stack_logs, "llmproxy.ratelimit.v1.RateLimitControlService/GetLimits")
    assert reply["domain"] == stack_logs.config.services.ratelimit.domain


def test_authz_reports_its_policy(stack_logs: Stack) -> None:
    reply = grpcurl(stack_logs, "llmproxy.authz.v1.AuthzService/GetPolicy")
    assert "x-llmproxy-tenant" in reply["identity_headers"]  # type: ignore[operator]


def test_health_lists_providers(stack_logs: Stack) -> None:
    reply = grpcurl(stack_logs, "llmproxy.health.v1.ProviderHealthService/ListProviders")
    assert [p["name"] for p in reply["providers"]] == ["demo"]  # type: ignore[attr-defined]


def test_fault_lists_experiments(stack_logs: Stack) -> None:
    # Other tests on this stack may have run experiments; each stops its own.
    reply = grpcurl(stack_logs, "llmproxy.fault.v1.FaultService/ListExperiments")
    experiments = reply.get("experiments", [])  # type: ignore[attr-defined]
    assert all(e["name"] for e in experiments)
    assert "EXPERIMENT_STATE_RUNNING" not in {e.get("state") for e in experiments}


def test_warm_cli_fills_the_cache_through_the_control_listener(
    stack_logs: Stack, tmp_path: Path, gateway_url: str, auth_headers: dict[str, str]
) -> None:
    requests = tmp_path / "requests.jsonl"
    requests.write_text(
        '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "warm me"}]}\n'
        '{"endpoint": "embeddings", "model": "gpt-4o-mini", "input": "warm"}\n'
        '{"model": "nope", "messages": [{"role": "user", "content": "x"}]}\n'
    )
    envoy = stack_logs.config.envoy
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "llmproxy.router.warm",
            str(requests),
            "--target",
            f"{envoy.host}:{envoy.control_port}",
            "--tenant",
            "e2e",  # the client key's tenant: cache.scope is tenant
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1  # one line failed
    assert "cached 2, already cached 0, failed 1" in done.stdout
    assert "line 3:" in done.stderr
    warmed = httpx.post(
        f"{gateway_url}/embeddings",
        headers=auth_headers,
        json={"model": "gpt-4o-mini", "input": "warm"},
    )
    assert warmed.headers["x-cache"] == "HIT"
