"""The servicers: Check's responses for Envoy, and admin calls' authentication and audit."""

from __future__ import annotations

import json
import logging
from typing import Any

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2
from google.rpc import code_pb2
from redis.exceptions import ConnectionError as RedisConnectionError

from llmproxy._gen.authz.v1 import authz_pb2
from llmproxy.authz.admin import KeyAdmin
from llmproxy.authz.adminauth import AdminAuth
from llmproxy.authz.authorizer import Authorizer
from llmproxy.authz.keys import KeyHasher
from llmproxy.authz.records import KeyRecord
from llmproxy.authz.service import AuthorizationServicer, AuthzControlServicer, header_safe
from tests.unit.authz.fakes import Clock, FakeKeyStore, FakeUsage
from tests.unit.authz.test_requests import check_request
from tests.unit.grpc_fakes import Aborted, FakeContext

HASHER = KeyHasher(b"k" * 32)
TOKEN = "admin-token-for-tests"  # noqa: S105 - a test value
ADMIN = (("authorization", f"Bearer {TOKEN}"),)
BODY = json.dumps(
    {"model": "gpt-4o-mini", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
).encode()


class Service:
    def __init__(self, token: str | None = TOKEN) -> None:
        self.store = FakeKeyStore()
        self.usage = FakeUsage()
        self.clock = Clock()
        self.admin = KeyAdmin(self.store, HASHER, self.clock)
        self.check = AuthorizationServicer(Authorizer(self.store, HASHER, self.usage, self.clock))
        self.control = AuthzControlServicer(
            self.admin, AdminAuth(token, "LLMPROXY_ADMIN_TOKEN"), self.store, self.clock
        )

    async def key(self, **fields: Any) -> tuple[KeyRecord, str]:
        return await self.admin.create(
            authz_pb2.CreateKeyRequest(tenant="acme", user="al", **fields)
        )

    async def run_check(
        self, headers: dict[str, str], body: bytes = BODY
    ) -> external_auth_pb2.CheckResponse:
        return await self.check.Check(check_request(headers, body), FakeContext())  # type: ignore[arg-type]


def headers_of(response: external_auth_pb2.CheckResponse) -> dict[str, str]:
    return {h.header.key: h.header.value for h in response.ok_response.headers}


async def test_allowed_requests_carry_identity_model_and_token_estimate() -> None:
    service = Service()
    record, secret = await service.key(tier="gold")
    response = await service.run_check({"authorization": f"Bearer {secret}"})
    assert response.status.code == code_pb2.OK
    assert headers_of(response) == {
        "x-llmproxy-tenant": "acme",
        "x-llmproxy-user": "al",
        "x-llmproxy-key-id": record.key_id,
        "x-llmproxy-tier": "gold",
        "x-llmproxy-model": "gpt-4o-mini",
        "x-llmproxy-token-estimate": "15",  # 1 token of text + 4 per message + max_tokens 10
        # Envoy's fault filter reads tenant-targeted chaos experiments' keys by it.
        "x-envoy-downstream-service-cluster": "tenant-acme",
    }
    assert list(response.ok_response.headers_to_remove) == ["authorization", "x-api-key"]
    assert all(
        h.append_action == h.OVERWRITE_IF_EXISTS_OR_ADD for h in response.ok_response.headers
    )


async def test_x_api_key_works_and_a_bodyless_request_has_no_model_headers() -> None:
    service = Service()
    _, secret = await service.key()
    response = await service.run_check({"x-api-key": secret}, b"")
    assert response.status.code == code_pb2.OK
    assert "x-llmproxy-model" not in headers_of(response)
    assert "x-llmproxy-token-estimate" not in headers_of(response)


async def denial(
    service: Service, headers: dict[str, str]
) -> tuple[int, dict[str, str], dict[str, object]]:
    response = await service.run_check(headers)
    assert response.WhichOneof("http_response") == "denied_response"
    denied = response.denied_response
    headers_out = {h.header.key: h.header.value for h in denied.headers}
    assert headers_out["content-type"] == "application/json"
    return int(denied.status.code), headers_out, json.loads(denied.body)["error"]


async def test_denials_are_openai_errors_with_the_right_status() -> None:
    service = Service()
    record, secret = await service.key(
        allowed_models=["llama*"], budget=authz_pb2.Budget(daily_usd=1)
    )
    status, headers, error = await denial(service, {})
    assert (status, error["code"]) == (401, "missing_api_key")
    assert headers["www-authenticate"] == 'Bearer realm="llmproxy"'
    status, _, error = await denial(service, {"authorization": "Bearer sk-nope"})
    assert (status, error["code"], error["type"]) == (
        401,
        "invalid_api_key",
        "invalid_request_error",
    )
    status, _, error = await denial(service, {"authorization": f"Bearer {secret}"})
    assert (status, error["code"], error["param"]) == (403, "model_not_allowed", "model")
    service.usage.spend[("key", record.key_id, "day")] = 1.5
    llama = json.dumps({"model": "llama-3", "messages": []}).encode()
    response = await service.run_check({"authorization": f"Bearer {secret}"}, llama)
    assert response.status.code == code_pb2.RESOURCE_EXHAUSTED
    assert response.denied_response.status.code == 429
    error = json.loads(response.denied_response.body)["error"]
    assert (error["type"], error["code"]) == ("insufficient_quota", "budget_exceeded")
    assert "$1.00" in error["message"]
    assert {h.header.key: h.header.value for h in response.denied_response.headers}[
        "x-should-retry"
    ] == "false"
    await service.admin.revoke(authz_pb2.RevokeKeyRequest(key_id=record.key_id))
    status, _, error = await denial(service, {"authorization": f"Bearer {secret}"})
    assert (status, error["code"]) == (403, "api_key_revoked")


async def test_a_key_store_failure_is_an_error_so_envoy_fails_closed() -> None:
    service = Service()
    _, secret = await service.key()

    async def broken(key_id: str) -> KeyRecord | None:
        raise RedisConnectionError("down")

    service.store.get = broken  # type: ignore[method-assign]
    with pytest.raises(Aborted) as raised:
        await service.run_check({"authorization": f"Bearer {secret}"})
    assert raised.value.code == grpc.StatusCode.UNAVAILABLE


async def test_get_policy_names_the_mode_and_every_trusted_header() -> None:
    reply = await Service().control.GetPolicy(authz_pb2.GetPolicyRequest(), FakeContext())  # type: ignore[arg-type]
    assert reply.mode == authz_pb2.POLICY_MODE_API_KEYS
    assert "x-llmproxy-model" in reply.identity_headers
    assert "x-llmproxy-token-estimate" in reply.identity_headers


@pytest.mark.parametrize(
    ("token", "metadata", "code"),
    [
        (TOKEN, (), grpc.StatusCode.UNAUTHENTICATED),
        (TOKEN, (("authorization", "Basic abc"),), grpc.StatusCode.UNAUTHENTICATED),
        (TOKEN, (("authorization", "Bearer wrong"),), grpc.StatusCode.PERMISSION_DENIED),
        (None, ADMIN, grpc.StatusCode.PERMISSION_DENIED),
    ],
)
async def test_admin_calls_without_the_token_are_refused_and_audited(
    token: str | None, metadata: tuple[tuple[str, str], ...], code: grpc.StatusCode
) -> None:
    service = Service(token)
    with pytest.raises(Aborted) as raised:
        await service.control.CreateKey(
            authz_pb2.CreateKeyRequest(tenant="acme"),
            FakeContext(metadata),  # type: ignore[arg-type]
        )
    assert raised.value.code == code
    assert service.store.records == {}
    (entry,) = service.store.audit
    assert (entry.method, entry.outcome, entry.actor) == ("CreateKey", code.name, "anonymous")
    assert entry.tenant == "acme"
    assert "wrong" not in entry.detail


async def test_every_admin_call_is_audited_without_secrets() -> None:
    service = Service()
    context = FakeContext((*ADMIN, ("x-llmproxy-actor", "ops-alice")))
    created = await service.control.CreateKey(
        authz_pb2.CreateKeyRequest(tenant="acme"),
        context,  # type: ignore[arg-type]
    )
    key_id = created.key.key_id
    await service.control.GetKey(authz_pb2.GetKeyRequest(key_id=key_id), context)  # type: ignore[arg-type]
    await service.control.ListKeys(authz_pb2.ListKeysRequest(), context)  # type: ignore[arg-type]
    request = authz_pb2.UpdateKeyRequest(key=authz_pb2.ApiKey(key_id=key_id, tier="gold"))
    request.update_mask.paths.append("tier")
    await service.control.UpdateKey(request, context)  # type: ignore[arg-type]
    rotated = await service.control.RotateKey(
        authz_pb2.RotateKeyRequest(key_id=key_id),
        context,  # type: ignore[arg-type]
    )
    await service.control.RevokeKey(
        authz_pb2.RevokeKeyRequest(key_id=key_id, reason="done"),
        context,  # type: ignore[arg-type]
    )
    with pytest.raises(Aborted) as raised:
        await service.control.GetKey(authz_pb2.GetKeyRequest(key_id="f" * 16), context)  # type: ignore[arg-type]
    assert raised.value.code == grpc.StatusCode.NOT_FOUND
    audit = await service.control.ListAuditRecords(
        authz_pb2.ListAuditRecordsRequest(),
        context,  # type: ignore[arg-type]
    )
    assert [(r.method, r.outcome) for r in reversed(audit.records)] == [
        ("CreateKey", "OK"),
        ("GetKey", "OK"),
        ("ListKeys", "OK"),
        ("UpdateKey", "OK"),
        ("RotateKey", "OK"),
        ("RevokeKey", "OK"),
        ("GetKey", "NOT_FOUND"),
    ]
    entries = service.store.audit
    assert all(e.actor == "admin (ops-alice)" for e in entries)
    assert entries[0].key_id == key_id
    assert entries[0].tenant == "acme"
    assert entries[3].detail == "fields: tier"
    assert entries[5].detail == "reason: done"
    text = repr(entries)
    for secret in (created.secret, rotated.secret, TOKEN):
        assert secret not in text
    assert created.key.prefix == f"sk-llmp-{key_id}"
    assert rotated.key.rotate_time.seconds > 0


async def test_a_key_store_failure_in_an_admin_call_is_unavailable_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    service = Service()

    async def broken(*args: object) -> None:
        raise RedisConnectionError("down")

    service.store.create = broken  # type: ignore[method-assign]
    service.store.append_audit = broken  # type: ignore[method-assign, assignment]
    with pytest.raises(Aborted) as raised:
        await service.control.CreateKey(
            authz_pb2.CreateKeyRequest(tenant="acme"),
            FakeContext(ADMIN),  # type: ignore[arg-type]
        )
    assert raised.value.code == grpc.StatusCode.UNAVAILABLE
    messages = [r.getMessage() for r in caplog.records]
    assert "audit" in messages  # the log keeps the audit trail when Redis cannot
    assert "audit record not stored" in messages


@pytest.mark.parametrize("model", ["bad\nmodel", "caf\u00e9", "x" * 300, ""])
def test_a_model_that_cannot_be_a_header_value_is_not_forwarded(model: str) -> None:
    assert not header_safe(model)


def test_ordinary_model_names_are_header_safe() -> None:
    assert header_safe("gpt-4o-mini")
    assert header_safe("meta-llama/Llama-3.1-8B-Instruct:free")
