"""Control-call benchmark: what checking a caller's token adds to a control call.

Starts its own stack (Redis, the five services, Envoy) on free loopback ports and calls the
rate limiter's own port, one call at a time, printing one JSON document of latencies (ms):

- `open`: grpc.health Check, which no credential guards: the floor of a call to that server;
- `get_limits_admin`: GetLimits with the bootstrap admin token (compared in process);
- `get_limits_token_cached`: GetLimits with a viewer control token already checked once
  (the service's token cache answers);
- `get_limits_token_first_use`: the first call of each of many fresh viewer tokens (the
  service asks authz's IntrospectToken, which reads Redis);
- `get_limits_no_token`: with --baseline only, for a tree from before access control.

It also times, in process, what the access interceptor costs per call (µs): passing an open
(data-plane) RPC through, and deciding who a bootstrap-admin or cached-token caller is.

    .venv/bin/python -m bench.bench_control [--calls 2000] [--fresh-tokens 200] [--baseline]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llmproxy._gen.ratelimit.v1 import ratelimit_pb2, ratelimit_pb2_grpc
from llmproxy.config import load_config
from llmproxy.devstack.freeports import with_free_ports
from llmproxy.devstack.stack import Stack


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)

    def at(share: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(share * len(ordered)))], 3)

    return {"calls": len(ordered), "p50_ms": at(0.5), "p90_ms": at(0.9), "p99_ms": at(0.99)}


async def timed(call: Callable[[], Awaitable[Any]], calls: int) -> dict[str, float]:
    for _ in range(min(100, calls)):  # warm the connection and the server's caches
        await call()
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - start) * 1000)
    return percentiles(samples)


async def fresh_tokens(stack: Stack, admin: str, count: int) -> list[str]:
    """count new viewer control tokens, made through authz's admin API."""
    from llmproxy._gen.access.v1 import access_pb2  # noqa: PLC0415 - absent before the change
    from llmproxy._gen.authz.v1 import authz_pb2, authz_pb2_grpc  # noqa: PLC0415

    authz = stack.config.services.authz
    async with grpc.aio.insecure_channel(f"{authz.host}:{authz.grpc_port}") as channel:
        stub = authz_pb2_grpc.AuthzServiceStub(channel)
        replies = [
            await stub.CreateControlToken(
                authz_pb2.CreateControlTokenRequest(name=f"bench-{i}", role=access_pb2.ROLE_VIEWER),
                metadata=(("authorization", f"Bearer {admin}"),),
            )
            for i in range(count)
        ]
    return [reply.secret for reply in replies]


async def measure(stack: Stack, calls: int, fresh: int, baseline: bool) -> dict[str, Any]:
    ratelimit = stack.config.services.ratelimit
    admin = stack.environ.get("LLMPROXY_ADMIN_TOKEN", "")
    async with grpc.aio.insecure_channel(f"{ratelimit.host}:{ratelimit.grpc_port}") as channel:
        health: Any = health_pb2_grpc.HealthStub(channel)
        control = ratelimit_pb2_grpc.RateLimitControlServiceStub(channel)

        def get_limits(token: str | None) -> Callable[[], Awaitable[Any]]:
            metadata = (("authorization", f"Bearer {token}"),) if token else ()
            return lambda: control.GetLimits(ratelimit_pb2.GetLimitsRequest(), metadata=metadata)

        result: dict[str, Any] = {
            "open": await timed(lambda: health.Check(health_pb2.HealthCheckRequest()), calls)
        }
        if baseline:
            result["get_limits_no_token"] = await timed(get_limits(None), calls)
            return result
        result["get_limits_admin"] = await timed(get_limits(admin), calls)
        tokens = await fresh_tokens(stack, admin, fresh + 1)
        result["get_limits_token_cached"] = await timed(get_limits(tokens[0]), calls)
        samples = []
        for token in tokens[1:]:
            start = time.perf_counter()
            await get_limits(token)()
            samples.append((time.perf_counter() - start) * 1000)
        result["get_limits_token_first_use"] = percentiles(samples)
    return result


async def in_process(calls: int = 100_000) -> dict[str, float]:
    """Microseconds per call of the interceptor's work, without any network."""
    from llmproxy.common.access import Caller, Role  # noqa: PLC0415 - absent before the change
    from llmproxy.common.access_control import AccessGuard, AccessInterceptor  # noqa: PLC0415
    from llmproxy.common.token_check import Introspection, TokenCache  # noqa: PLC0415

    class Known:
        async def introspect(self, token: str) -> Introspection:
            return Introspection(Caller(actor="token:bench", role=Role.VIEWER))

    guard = AccessGuard(
        service="bench",
        service_token="s" * 32,
        admin_token="a" * 32,
        verifier=TokenCache(Known(), ttl_s=3600, stale_grace_s=0),
        audit=None,  # type: ignore[arg-type]  # nothing here is audited
    )
    interceptor = AccessInterceptor(guard)
    handler = grpc.unary_unary_rpc_method_handler(lambda request, context: request)

    async def continuation(details: Any) -> Any:
        return handler

    class Details:
        method = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"
        invocation_metadata = ()

    async def per_call_us(work: Callable[[], Awaitable[Any]]) -> float:
        start = time.perf_counter()
        for _ in range(calls):
            await work()
        return round((time.perf_counter() - start) / calls * 1e6, 3)

    admin = (("authorization", "Bearer " + "a" * 32),)
    viewer = (("authorization", "Bearer ct-llmp-bench"),)
    return {
        "continuation_alone_us": await per_call_us(lambda: continuation(Details)),
        "open_rpc_through_interceptor_us": await per_call_us(
            lambda: interceptor.intercept_service(continuation, Details)  # type: ignore[arg-type]
        ),
        "bootstrap_admin_caller_us": await per_call_us(lambda: guard.caller_of(admin)),
        "cached_token_caller_us": await per_call_us(lambda: guard.caller_of(viewer)),
    }


async def run(calls: int, fresh: int, baseline: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        data = with_free_ports()
        data["log_level"] = "WARNING"
        path = Path(tmp) / "llmproxy.yaml"
        path.write_text(yaml.safe_dump(data))
        environ = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
        stack = Stack(load_config(path, environ), path, Path(tmp) / "run", environ)
        await stack.start()
        try:
            result = {
                "benchmark": "control",
                "load_average_at_start": os.getloadavg(),
                "latency": await measure(stack, calls, fresh, baseline),
            }
            if not baseline:
                result["in_process"] = await in_process()
            return result
        finally:
            stack.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per measurement")
    parser.add_argument("--fresh-tokens", type=int, default=200, help="first uses to time")
    parser.add_argument(
        "--baseline", action="store_true", help="a tree from before access control: no tokens"
    )
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.calls, args.fresh_tokens, args.baseline)), indent=2))


if __name__ == "__main__":
    main()
