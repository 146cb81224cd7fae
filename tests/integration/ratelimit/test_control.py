"""The control API on real Redis: limits, usage, reset, reload (RPC and file watch), errors."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from llmproxy._gen.ratelimit.v1 import ratelimit_pb2
from llmproxy.ratelimit.redis_store import TAKE
from tests.harness.configs import stack_config_data, write_config
from tests.harness.waiting import eventually
from tests.integration.ratelimit.conftest import (
    OK,
    OVER_LIMIT,
    StartRatelimit,
    descriptor,
    request,
)

LIMITS = """
domain: llmproxy
descriptors:
  - key: tenant
    rate_limit: {unit: minute, requests_per_unit: 3}
    descriptors:
      - key: key_id
        rate_limit: {unit: hour, requests_per_unit: 2, algorithm: sliding_log, name: per-key}
  - key: tenant
    value: internal
    unlimited: true
  - key: remote_address
    rate_limit: {unit: second, requests_per_unit: 1}
    shadow_mode: true
"""


def rpc_descriptor(*entries: tuple[str, str]) -> ratelimit_pb2.Descriptor:
    return ratelimit_pb2.Descriptor(
        entries=[ratelimit_pb2.DescriptorEntry(key=k, value=v) for k, v in entries]
    )


def reloads(result: str) -> float:
    value = REGISTRY.get_sample_value("llmproxy_ratelimit_config_reloads_total", {"result": result})
    return value or 0.0


async def test_get_limits_reports_the_file(
    start_ratelimit: StartRatelimit, limits_file: Callable[[str], Path]
) -> None:
    path = limits_file(LIMITS)
    instance = await start_ratelimit(path)
    reply = await instance.control.GetLimits(ratelimit_pb2.GetLimitsRequest())
    assert reply.domain == "llmproxy"
    assert reply.config_path == str(path)
    assert len(reply.config_sha256) == 64
    assert not reply.degraded
    by_entries = {tuple((e.key, e.value) for e in limit.entries): limit for limit in reply.limits}
    per_key = by_entries[(("tenant", ""), ("key_id", ""))]
    assert (per_key.requests_per_unit, per_key.unit, per_key.name) == (
        2,
        ratelimit_pb2.UNIT_HOUR,
        "per-key",
    )
    assert per_key.algorithm == ratelimit_pb2.ALGORITHM_SLIDING_LOG
    assert by_entries[(("tenant", "internal"),)].unlimited
    assert by_entries[(("remote_address", ""),)].shadow_mode


async def test_usage_counts_and_reset_forgets(start_ratelimit: StartRatelimit, limits_file) -> None:  # type: ignore[no-untyped-def]
    instance = await start_ratelimit(limits_file(LIMITS))
    key = rpc_descriptor(("tenant", "acme"), ("key_id", "k1"))
    envoy_key = request(descriptor(("tenant", "acme"), ("key_id", "k1")))
    codes = [(await instance.rls.ShouldRateLimit(envoy_key)).overall_code for _ in range(3)]
    assert codes == [OK, OK, OVER_LIMIT]
    usage = await instance.control.GetUsage(ratelimit_pb2.GetUsageRequest(descriptor=key))
    assert (usage.used, usage.remaining) == (2, 0)
    assert 3500 < usage.reset_after.seconds <= 3600  # the oldest hit leaves the hour window
    again = await instance.control.GetUsage(ratelimit_pb2.GetUsageRequest(descriptor=key))
    assert again.used == 2  # looking counts nothing
    reset = await instance.control.ResetUsage(ratelimit_pb2.ResetUsageRequest(descriptor=key))
    assert reset.existed
    assert reset.limit.requests_per_unit == 2
    # The cached refusal went with it: the key is admitted again at once.
    assert (await instance.rls.ShouldRateLimit(envoy_key)).overall_code == OK


async def test_a_refused_request_costs_its_other_limits_nothing(
    start_ratelimit: StartRatelimit, limits_file: Callable[[str], Path]
) -> None:
    instance = await start_ratelimit(limits_file(LIMITS))
    both = request(descriptor(("tenant", "acme")), descriptor(("tenant", "acme"), ("key_id", "k1")))
    for _ in range(2):
        assert (await instance.rls.ShouldRateLimit(both)).overall_code == OK
    refused = await instance.rls.ShouldRateLimit(both)
    assert refused.overall_code == OVER_LIMIT
    assert refused.statuses[0].code == OK  # the tenant had room...

    async def tenant_used() -> int:
        usage = await instance.control.GetUsage(
            ratelimit_pb2.GetUsageRequest(descriptor=rpc_descriptor(("tenant", "acme")))
        )
        return int(usage.used)

    # ...and gets its hit back, with the next batch.
    await eventually(tenant_used, lambda used: used == 2, what="the tenant's hit given back")


async def test_shadow_mode_measures_but_never_refuses(
    start_ratelimit: StartRatelimit, limits_file: Callable[[str], Path]
) -> None:
    instance = await start_ratelimit(limits_file(LIMITS))
    ip = request(descriptor(("remote_address", "10.0.0.1")))
    replies = [await instance.rls.ShouldRateLimit(ip) for _ in range(3)]
    assert {r.overall_code for r in replies} == {OK}
    assert replies[-1].statuses[0].limit_remaining == 0
    assert not replies[-1].raw_body


async def test_bad_arguments_get_clear_errors(
    start_ratelimit: StartRatelimit, limits_file: Callable[[str], Path]
) -> None:
    instance = await start_ratelimit(limits_file(LIMITS))
    cases = [
        (
            instance.control.GetUsage(
                ratelimit_pb2.GetUsageRequest(descriptor=rpc_descriptor(("model", "x")))
            ),
            grpc.StatusCode.NOT_FOUND,
            "no limit applies to the descriptor model=x",
        ),
        (
            instance.control.ResetUsage(ratelimit_pb2.ResetUsageRequest()),
            grpc.StatusCode.INVALID_ARGUMENT,
            "at least one entry",
        ),
        (
            instance.internal.ReconcileTokens(ratelimit_pb2.ReconcileTokensRequest()),
            grpc.StatusCode.INVALID_ARGUMENT,
            "no descriptors",
        ),
        (
            instance.rls.ShouldRateLimit(request()),
            grpc.StatusCode.INVALID_ARGUMENT,
            "no descriptors",
        ),
        (
            instance.rls.ShouldRateLimit(
                request(descriptor(("tenant", "a"))).__class__(domain="other")
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "domain 'other' is not this service's domain 'llmproxy'",
        ),
        (
            instance.rls.ShouldRateLimit(request(descriptor(("", "v")))),
            grpc.StatusCode.INVALID_ARGUMENT,
            "every descriptor entry needs a key",
        ),
    ]
    for call, code, message in cases:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call
        assert raised.value.code() == code
        assert message in (raised.value.details() or "")


async def test_reload_rejects_a_bad_file_and_keeps_the_old_limits(
    start_ratelimit: StartRatelimit, limits_file: Callable[[str], Path]
) -> None:
    path = limits_file(LIMITS)
    instance = await start_ratelimit(path)
    before = await instance.control.GetLimits(ratelimit_pb2.GetLimitsRequest())
    rejected = reloads("rejected")
    path.write_text(LIMITS.replace("unit: minute", "unit: fortnight"))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await instance.control.ReloadConfig(ratelimit_pb2.ReloadConfigRequest())
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "descriptors[0].rate_limit.unit: Input should be 'second', 'minute'" in str(
        raised.value.details()
    )
    assert reloads("rejected") == rejected + 1
    after = await instance.control.GetLimits(ratelimit_pb2.GetLimitsRequest())
    assert after.config_sha256 == before.config_sha256
    # The old limits still decide.
    assert (await instance.rls.ShouldRateLimit(request(descriptor(("tenant", "a"))))).statuses[
        0
    ].current_limit.requests_per_unit == 3

    path.write_text(LIMITS.replace("requests_per_unit: 3", "requests_per_unit: 7"))
    reply = await instance.control.ReloadConfig(ratelimit_pb2.ReloadConfigRequest())
    assert reply.changed
    assert reply.limit_count == 4
    status = (await instance.rls.ShouldRateLimit(request(descriptor(("tenant", "a"))))).statuses[0]
    assert status.current_limit.requests_per_unit == 7
    again = await instance.control.ReloadConfig(ratelimit_pb2.ReloadConfigRequest())
    assert not again.changed


async def test_an_edited_file_applies_without_any_call(
    start_ratelimit: StartRatelimit, limits_file: Callable[[str], Path]
) -> None:
    path = limits_file(LIMITS)
    instance = await start_ratelimit(path, reload_interval_s="0.05")
    path.write_text(LIMITS.replace("requests_per_unit: 3", "requests_per_unit: 9"))

    async def tenant_limit() -> int:
        reply = await instance.rls.ShouldRateLimit(request(descriptor(("tenant", "a"))))
        return int(reply.statuses[0].current_limit.requests_per_unit)

    await eventually(tenant_limit, lambda limit: limit == 9, what="the edited limit")
    rejected = reloads("rejected")
    path.write_text("domain: llmproxy\ndescriptors: [{key: tenant, bogus: 1}]\n")
    await eventually(
        lambda: reloads("rejected"), lambda count: count > rejected, what="a rejected reload"
    )
    assert reloads("rejected") == rejected + 1
    reply = await instance.rls.ShouldRateLimit(request(descriptor(("tenant", "a"))))
    assert reply.statuses[0].current_limit.requests_per_unit == 9


async def test_decisions_survive_a_script_flush(
    start_ratelimit: StartRatelimit,
    limits_file: Callable[[str], Path],
    redis_client: aioredis.Redis,
) -> None:
    """After a Redis restart the scripts are gone: EVALSHA's NOSCRIPT falls back to EVAL."""
    instance = await start_ratelimit(limits_file(LIMITS))
    one = request(descriptor(("tenant", "acme")))
    assert (await instance.rls.ShouldRateLimit(one)).overall_code == OK
    await redis_client.script_flush()
    assert (await instance.rls.ShouldRateLimit(one)).overall_code == OK
    assert (await instance.rls.ShouldRateLimit(one)).statuses[0].limit_remaining == 0
    assert await redis_client.script_exists(TAKE.sha) == [True]  # EVAL loaded it again


def test_an_invalid_limits_file_stops_startup_naming_the_problem(tmp_path: Path) -> None:
    bad = tmp_path / "ratelimit.yaml"
    bad.write_text(
        "domain: llmproxy\ndescriptors:\n  - key: tenant\n    rate_limit: {unit: minute}\n"
    )
    data = stack_config_data()
    data["services"]["ratelimit"]["limits_file"] = str(bad)
    path, _ = write_config(tmp_path, data)
    done = subprocess.run(
        [sys.executable, "-m", "llmproxy.ratelimit", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "descriptors[0].rate_limit.requests_per_unit: Field required" in done.stderr
    assert "Traceback" not in done.stderr


def handled(code: str) -> float:
    labels = {
        "service": "envoy.service.ratelimit.v3.RateLimitService",
        "method": "ShouldRateLimit",
        "code": code,
    }
    return REGISTRY.get_sample_value("llmproxy_grpc_server_handled_total", labels) or 0.0


async def test_should_rate_limit_bytes_that_do_not_parse_are_invalid_and_counted_once(
    start_ratelimit: StartRatelimit, limits_file: Callable[[str], Path]
) -> None:
    instance = await start_ratelimit(limits_file(LIMITS))
    raw = instance.channel.unary_unary(
        "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit",
        request_serializer=None,
        response_deserializer=None,
    )
    ok_before, invalid_before = handled("OK"), handled("INVALID_ARGUMENT")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await raw(b"\x0a\xff\xff")
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "the request is not a RateLimitRequest" in (raised.value.details() or "")
    reply = await instance.rls.ShouldRateLimit(request(descriptor(("tenant", "a"))))
    assert reply.overall_code == OK
    # Counted by the handler itself, not a second time by the metrics interceptor.
    assert handled("INVALID_ARGUMENT") - invalid_before == 1
    assert handled("OK") - ok_before == 1


async def test_a_reset_through_one_instance_reaches_every_instance(
    start_ratelimit: StartRatelimit, limits_file: Callable[[str], Path]
) -> None:
    path = limits_file(LIMITS)
    first, second = await start_ratelimit(path), await start_ratelimit(path)
    envoy_key = request(descriptor(("tenant", "acme"), ("key_id", "shared")))
    codes = [(await first.rls.ShouldRateLimit(envoy_key)).overall_code for _ in range(3)]
    assert codes == [OK, OK, OVER_LIMIT]
    # The second instance now remembers the refusal too, and would refuse from memory alone.
    assert (await second.rls.ShouldRateLimit(envoy_key)).overall_code == OVER_LIMIT
    key = rpc_descriptor(("tenant", "acme"), ("key_id", "shared"))
    await first.control.ResetUsage(ratelimit_pb2.ResetUsageRequest(descriptor=key))

    async def second_admits() -> bool:
        return (await second.rls.ShouldRateLimit(envoy_key)).overall_code == OK

    # One admission only: the published reset arrives within milliseconds; until then the
    # second instance's answers are refusals from memory, which count nothing.
    await eventually(second_admits, what="the second instance admits after reset", timeout_s=5)
