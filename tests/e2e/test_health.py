"""Provider health through the whole stack: Envoy takes each provider's endpoints and health
from the health service over EDS, the router skips what it marks down, and every health RPC
answers through Envoy's control listener as the README shows."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from llmproxy._gen.health.v1 import health_pb2, health_pb2_grpc
from llmproxy.devstack.process import ManagedProcess
from llmproxy.devstack.stack import Stack
from tests.e2e.conftest import create_key
from tests.harness import logs
from tests.harness.control import admin_header, control_channel, service_header
from tests.harness.providers_stack import providers_stack
from tests.harness.waiting import eventually_sync

ROOT = Path(__file__).resolve().parents[2]
GRPCURL = str(Path(sys.executable).parent / "grpcurl")
PROVIDERS = ("alpha", "beta")
HEALTH_API = "llmproxy.health.v1.ProviderHealthService"
HEALTHY = health_pb2.PROVIDER_STATE_HEALTHY
UNHEALTHY = health_pb2.PROVIDER_STATE_UNHEALTHY


class Gateway:
    """A stack with two fake providers behind one model, and clients of its parts."""

    def __init__(
        self, stack: Stack, fakes: dict[str, ManagedProcess], ports: dict[str, int]
    ) -> None:
        self.stack = stack
        self.fakes = fakes
        self.ports = ports
        envoy = stack.config.envoy
        self.admin = f"http://{envoy.host}:{envoy.admin_port}"
        self.egress = f"http://{envoy.host}:{envoy.egress_port}"
        self.gateway = f"http://{envoy.host}:{envoy.listener_port}/v1"
        self.control = f"{envoy.host}:{envoy.control_port}"
        self.key = create_key(stack, tenant="e2e-health", user="pytest", name="health").secret

    def knobs(self, provider: str, **knobs: Any) -> None:
        url = f"http://127.0.0.1:{self.ports[provider]}/_fake/knobs"
        httpx.put(url, json=knobs, timeout=5).raise_for_status()

    def grpcurl(
        self, method: str, body: str = "{}", *extra: str, header: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """A control call through Envoy, as the admin unless header says otherwise."""
        return subprocess.run(
            [
                GRPCURL,
                "-plaintext",
                "-protoset",
                str(ROOT / "envoy" / "llmproxy.protoset"),
                "-H",
                header or admin_header(self.stack),
                *extra,
                "-d",
                body,
                self.control,
                method,
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    def call(self, method: str, body: str = "{}", header: str | None = None) -> dict[str, Any]:
        """One health RPC through Envoy's control listener, with grpcurl as the README does."""
        done = self.grpcurl(f"{HEALTH_API}/{method}", body, header=header)
        assert done.returncode == 0, done.stderr
        result: dict[str, Any] = json.loads(done.stdout)
        return result

    def provider(self, name: str) -> health_pb2.Provider:
        """One provider through Envoy's control listener (Python gRPC: fast enough to poll)."""
        with control_channel(self.stack) as channel:
            reply = health_pb2_grpc.ProviderHealthServiceStub(channel).GetProvider(
                health_pb2.GetProviderRequest(name=name), timeout=5
            )
        return reply.provider

    def set_maintenance(self, name: str, maintenance: bool) -> None:
        with control_channel(self.stack) as channel:
            health_pb2_grpc.ProviderHealthServiceStub(channel).SetMaintenance(
                health_pb2.SetMaintenanceRequest(name=name, maintenance=maintenance), timeout=5
            )

    def wait_state(self, name: str, state: int, within_s: float) -> float:
        """Seconds until the health service reports provider name in state."""
        started = time.monotonic()
        eventually_sync(
            lambda: self.provider(name),
            lambda found: found.state == state,
            what=f"{name} in state {state}",
            timeout_s=within_s,
        )
        return time.monotonic() - started

    def envoy_flags(self, provider: str) -> str:
        """Envoy's health flags of the provider's endpoint, from its admin /clusters."""
        lines = httpx.get(f"{self.admin}/clusters", timeout=5).text.splitlines()
        flags = [
            line
            for line in lines
            if line.startswith(f"provider_{provider}::") and "::health_flags::" in line
        ]
        return flags[0].rsplit("::", 1)[1] if flags else "(no endpoint)"

    def wait_flags(self, provider: str, expected: str, within_s: float) -> None:
        eventually_sync(
            lambda: self.envoy_flags(provider),
            lambda flags: flags == expected,
            what=f"Envoy's provider_{provider} {expected}",
            timeout_s=within_s,
        )

    def stat(self, name: str) -> int:
        text = httpx.get(f"{self.admin}/stats?filter=^{name}$", timeout=5).text
        return int(text.split(":")[1]) if ":" in text else 0

    def attempts(self, provider: str) -> int:
        """Requests the router sent to provider through Envoy, refused ones included."""
        return self.stat(f"cluster.provider_{provider}.upstream_rq_total") + self.stat(
            f"cluster.provider_{provider}.upstream_cx_none_healthy"
        )

    def until_router_skips(self, provider: str) -> None:
        """Wait until a chat goes without an attempt at provider: the router got the news.

        Envoy already refuses provider (the caller waited for its flags), so a chat the router
        still sends there fails over at once rather than hanging.
        """

        def attempts_during_a_chat() -> int:
            before = self.attempts(provider)
            self.chat()
            return self.attempts(provider) - before

        eventually_sync(
            attempts_during_a_chat, lambda count: count == 0, what=f"the router skipping {provider}"
        )

    def chat(self) -> httpx.Response:
        return httpx.post(
            f"{self.gateway}/chat/completions",
            json={"model": "m", "messages": [{"role": "user", "content": "hello"}]},
            headers={"authorization": f"Bearer {self.key}"},
            timeout=10,
        )


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    workdir = tmp_path_factory.mktemp("health-stack")
    with providers_stack(workdir, PROVIDERS) as started:
        yield Gateway(started.stack, started.fakes, started.ports)


@pytest.fixture
def health(request: pytest.FixtureRequest, gateway: Gateway) -> Iterator[Gateway]:
    """The gateway with its logs attached to a failing test; providers healthy after it."""
    logs.watch(request.node, *gateway.stack.processes.values(), *gateway.fakes.values())
    yield gateway
    for name in PROVIDERS:
        gateway.knobs(name, outage="none", error_rate=0)
        gateway.set_maintenance(name, False)
    for name in PROVIDERS:
        gateway.wait_state(name, HEALTHY, within_s=10)
        gateway.wait_flags(name, "healthy", within_s=5)


def test_envoy_takes_provider_endpoints_from_the_health_service(health: Gateway) -> None:
    for name in PROVIDERS:
        health.wait_flags(name, "healthy", within_s=5)
    clusters = httpx.get(f"{health.admin}/clusters", timeout=5).text
    assert f"provider_alpha::127.0.0.1:{health.ports['alpha']}::hostname::127.0.0.1" in clusters
    assert health.stat("cluster.provider_alpha.update_success") >= 1  # EDS updates arrived
    assert httpx.get(f"{health.egress}/alpha/models", timeout=5).status_code == 200


def test_envoy_stops_routing_to_a_provider_marked_unhealthy(health: Gateway) -> None:
    health.knobs("alpha", outage="hang")
    down_s = health.wait_state("alpha", UNHEALTHY, within_s=5)
    health.wait_flags("alpha", "/failed_eds_health", within_s=2)
    # Without EDS this request would hang with the provider; Envoy refuses it at once instead.
    refused = httpx.get(f"{health.egress}/alpha/models", timeout=5)
    assert (refused.status_code, refused.text) == (503, "no healthy upstream")
    health.knobs("alpha", outage="none")
    up_s = health.wait_state("alpha", HEALTHY, within_s=10)
    health.wait_flags("alpha", "healthy", within_s=2)
    assert httpx.get(f"{health.egress}/alpha/models", timeout=5).status_code == 200
    print(f"through Envoy: unhealthy after {down_s:.2f} s, healthy {up_s:.2f} s after recovery")


def test_the_router_skips_an_unhealthy_provider_without_a_call(health: Gateway) -> None:
    first = health.chat()
    assert (first.status_code, first.headers["x-llmproxy-provider"]) == (200, "alpha")
    health.knobs("alpha", outage="hang")
    health.wait_state("alpha", UNHEALTHY, within_s=5)
    health.wait_flags("alpha", "/failed_eds_health", within_s=2)
    health.until_router_skips("alpha")  # the router's watch stream delivered the change
    attempts = health.attempts("alpha")
    answers = [health.chat() for _ in range(5)]
    assert [(r.status_code, r.headers.get("x-llmproxy-provider")) for r in answers] == [
        (200, "beta")
    ] * 5
    # Not one call to alpha left the router: Envoy saw none, not even one it refused.
    assert health.attempts("alpha") == attempts


def test_maintenance_drains_a_provider_in_envoy_and_the_router(health: Gateway) -> None:
    reply = health.call(
        "SetMaintenance", json.dumps({"name": "alpha", "maintenance": True, "reason": "e2e"})
    )
    assert reply["provider"]["maintenance"] is True
    health.wait_flags("alpha", "/eds_status_draining", within_s=2)
    health.until_router_skips("alpha")
    assert health.chat().headers["x-llmproxy-provider"] == "beta"


def test_every_health_rpc_answers_through_the_control_listener(health: Gateway) -> None:
    """The README's grpcurl examples, one per RPC."""
    listed = health.call("ListProviders")
    assert [p["name"] for p in listed["providers"]] == list(PROVIDERS)
    got = health.call("GetProvider", '{"name": "beta"}')
    assert got["provider"]["available"] is True
    probed = health.call("ProbeNow", '{"name": "beta"}')
    assert probed["result"]["ok"] is True
    assert probed["result"]["detail"] == "1 models listed"
    drained = health.call(
        "SetMaintenance", '{"name": "beta", "maintenance": true, "reason": "key rotation"}'
    )
    assert drained["provider"]["maintenance_reason"] == "key rotation"
    restored = health.call("SetMaintenance", '{"name": "beta", "maintenance": false}')
    assert restored["provider"].get("maintenance", False) is False
    # Outcomes are the router's to report: the service token may, not even the admin.
    outcomes = (
        '{"reporter": "grpcurl", "outcomes": [{"provider": "beta", "ok": true, "status_code": 200,'
        ' "latency": "0.120s"}]}'
    )
    forged = health.grpcurl(f"{HEALTH_API}/ReportOutcomes", outcomes)
    assert "Code: PermissionDenied" in forged.stderr
    reported = health.call("ReportOutcomes", outcomes, service_header(health.stack))
    assert reported == {"accepted": 1}
    components = {c["name"]: c for c in health.call("ListComponents")["components"]}
    assert set(components) == {"redis", "router", "ratelimit", "authz", "fault"}
    assert all(c.get("healthy") for c in components.values()), components
    # A stream: grpcurl prints the snapshot, then gives up after -max-time.
    watched = health.grpcurl(
        f"{HEALTH_API}/WatchProviders", '{"names": ["alpha"]}', "-max-time", "2"
    )
    assert '"name": "alpha"' in watched.stdout
    assert '"initial": true' in watched.stdout
    # The standard health service, on the service itself (with reflection): one name per
    # provider, and Redis as a component.
    settings = health.stack.config.services.health
    for service in ("llmproxy.health.provider.alpha", "llmproxy.health.redis"):
        done = subprocess.run(
            [
                GRPCURL,
                "-plaintext",
                "-d",
                json.dumps({"service": service}),
                f"{settings.host}:{settings.grpc_port}",
                "grpc.health.v1.Health/Check",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {"status": "SERVING"}


def test_bad_input_is_a_clear_error_through_envoy(health: Gateway) -> None:
    done = health.grpcurl(f"{HEALTH_API}/GetProvider", '{"name": "gamma"}')
    assert done.returncode != 0
    assert "NotFound" in done.stderr
    assert "no provider named 'gamma' is configured (known: alpha, beta)" in done.stderr


def test_envoy_health_checks_our_services_with_grpc(health: Gateway) -> None:
    clusters = httpx.get(f"{health.admin}/clusters", timeout=5).text
    for service in ("router", "ratelimit", "authz", "health", "fault"):
        flags = [
            line
            for line in clusters.splitlines()
            if line.startswith(f"llmproxy_{service}::") and "::health_flags::" in line
        ]
        assert flags, clusters
        assert all(line.endswith("::health_flags::healthy") for line in flags), flags
        assert health.stat(f"cluster.llmproxy_{service}.health_check.success") >= 1
