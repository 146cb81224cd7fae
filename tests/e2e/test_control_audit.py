"""The audit trail through the stack: an operator's changes on every service, and refused calls,
are in authz's ListAuditRecords, saying who, what (secrets redacted), where and how it ended."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import grpc
import pytest
from google.protobuf import duration_pb2

from llmproxy._gen.authz.v1 import authz_pb2, authz_pb2_grpc
from llmproxy._gen.fault.v1 import fault_pb2, fault_pb2_grpc
from llmproxy._gen.health.v1 import health_pb2, health_pb2_grpc
from llmproxy._gen.ratelimit.v1 import ratelimit_pb2, ratelimit_pb2_grpc
from llmproxy._gen.router.v1 import router_pb2, router_pb2_grpc
from llmproxy.common.access import Role
from llmproxy.common.audit import REDACTED
from llmproxy.common.credentials import bearer_metadata
from llmproxy.devstack.stack import Stack
from tests.harness.control import (
    IssuedToken,
    admin_token,
    audit_records,
    control_target,
    create_control_token,
)

AUDITED_SERVICES = ("ratelimit", "router", "health", "fault")


def by(
    found: Iterable[authz_pb2.AuditRecord], service: str, method: str, actor: str
) -> list[authz_pb2.AuditRecord]:
    """The records of method on service by actor, oldest first."""
    return [
        r
        for r in reversed(list(found))
        if (r.service, r.method, r.actor) == (service, method, actor)
    ]


def arguments(record: authz_pb2.AuditRecord) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(record.arguments)
    return parsed


async def operate(
    channel: grpc.aio.Channel, operator: IssuedToken, provider: str
) -> list[tuple[str, str, dict[str, Any]]]:
    """An operator's change on each audited service: (service, method, arguments) of each, the
    arguments as the audit trail writes the request (set fields only, enums by name)."""
    metadata = bearer_metadata(operator.secret)
    reload = ratelimit_pb2.ReloadConfigRequest()
    invalidate = router_pb2.InvalidateCacheRequest(tags=["e2e-audit"])
    drain = health_pb2.SetMaintenanceRequest(name=provider, maintenance=True, reason="e2e audit")
    restore = health_pb2.SetMaintenanceRequest(name=provider, maintenance=False, reason="done")
    create = fault_pb2.CreateExperimentRequest(
        name="e2e-audit",
        target=fault_pb2.Target(tenant="e2e-audit"),
        faults=[fault_pb2.Fault(abort=fault_pb2.AbortFault(percent=10, http_status=503))],
        severity=fault_pb2.SEVERITY_LOW,
        duration=duration_pb2.Duration(seconds=30),
    )
    await ratelimit_pb2_grpc.RateLimitControlServiceStub(channel).ReloadConfig(
        reload, metadata=metadata, timeout=10
    )
    await router_pb2_grpc.RouterServiceStub(channel).InvalidateCache(
        invalidate, metadata=metadata, timeout=10
    )
    health = health_pb2_grpc.ProviderHealthServiceStub(channel)
    await health.SetMaintenance(drain, metadata=metadata, timeout=10)
    await health.SetMaintenance(restore, metadata=metadata, timeout=10)
    await fault_pb2_grpc.FaultServiceStub(channel).CreateExperiment(
        create, metadata=metadata, timeout=10
    )
    return [
        ("ratelimit", "ReloadConfig", {}),
        ("router", "InvalidateCache", {"tags": ["e2e-audit"]}),
        (
            "health",
            "SetMaintenance",
            {"name": provider, "maintenance": True, "reason": "e2e audit"},
        ),
        ("health", "SetMaintenance", {"name": provider, "reason": "done"}),
        (
            "fault",
            "CreateExperiment",
            {
                "name": "e2e-audit",
                "target": {"tenant": "e2e-audit"},
                "faults": [{"abort": {"percent": 10, "http_status": 503}}],
                "severity": "SEVERITY_LOW",
                "duration": {"seconds": 30},
            },
        ),
    ]


async def test_changes_and_refusals_on_every_service_are_audited(own_stack: Stack) -> None:
    admin = admin_token(own_stack)
    async with grpc.aio.insecure_channel(control_target(own_stack.config)) as channel:
        viewer = await create_control_token(channel, admin, Role.VIEWER, "e2e auditor")
        operator = await create_control_token(channel, admin, Role.OPERATOR, "e2e operator")
        providers = await health_pb2_grpc.ProviderHealthServiceStub(channel).ListProviders(
            health_pb2.ListProvidersRequest(), metadata=bearer_metadata(viewer.secret), timeout=10
        )
        provider = providers.providers[0].name
        done = await operate(channel, operator, provider)
        # Refused: a viewer resetting usage, an operator asking what a token is, and a caller
        # with no token at all.
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await ratelimit_pb2_grpc.RateLimitControlServiceStub(channel).ResetUsage(
                ratelimit_pb2.ResetUsageRequest(), metadata=bearer_metadata(viewer.secret)
            )
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await authz_pb2_grpc.AuthzServiceStub(channel).IntrospectToken(
                authz_pb2.IntrospectTokenRequest(token=admin),
                metadata=bearer_metadata(operator.secret),
            )
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await router_pb2_grpc.RouterServiceStub(channel).WarmCache(
                router_pb2.WarmCacheRequest(tenant="e2e-audit")
            )
        assert denied.value.code() == grpc.StatusCode.UNAUTHENTICATED
        found = await audit_records(channel, viewer.secret)
        per_service = {
            name: await audit_records(channel, viewer.secret, service=name)
            for name in AUDITED_SERVICES
        }

    operator_actor = f"token:{operator.token_id}"
    for service, method in {(s, m) for s, m, _ in done}:
        expected = [a for s, m, a in done if (s, m) == (service, method)]
        audited = by(found, service, method, operator_actor)
        assert [arguments(r) for r in audited] == expected, f"{service} {method}"
        for record in audited:
            assert (record.role, record.outcome) == ("operator", "OK")
            assert record.time.seconds > 0
            assert record.peer

    [reset] = by(found, "ratelimit", "ResetUsage", f"token:{viewer.token_id}")
    assert (reset.role, reset.outcome) == ("viewer", "PERMISSION_DENIED")
    assert "needs a control token of role operator" in reset.detail
    [introspect] = by(found, "authz", "IntrospectToken", operator_actor)
    assert (introspect.role, introspect.outcome) == ("operator", "PERMISSION_DENIED")
    assert arguments(introspect) == {"token": REDACTED}
    [warm] = by(found, "router", "WarmCache", "anonymous")
    assert (warm.role, warm.outcome) == ("", "UNAUTHENTICATED")
    assert arguments(warm) == {"tenant": "e2e-audit"}
    # Those are the only refusals: the services' own calls to each other all get in.
    refused = [r for r in found if r.outcome != "OK"]
    assert sorted((r.service, r.method) for r in refused) == [
        ("authz", "IntrospectToken"),
        ("ratelimit", "ResetUsage"),
        ("router", "WarmCache"),
    ], [(r.service, r.method, r.actor, r.detail) for r in refused]
    # Reads are not audited; no record holds a secret.
    assert not [r for r in found if r.method in {"ListProviders", "ListAuditRecords"}]
    for record in found:
        text = str(record)
        assert admin not in text
        assert viewer.secret not in text
        assert operator.secret not in text

    # The service filter picks one service's records, all of them.
    for name, selected in per_service.items():
        assert selected
        assert {r.service for r in selected} == {name}
        assert [r.id for r in selected] == [r.id for r in found if r.service == name]
