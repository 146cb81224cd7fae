"""The servicers: Check's responses for Envoy, and the control API's answers and status codes.

Who may call the control API is the access interceptor's to decide (common.access_control,
tested with the servers in tests/integration/authz); these tests call the servicer directly.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2
from google.rpc import code_pb2
from redis.exceptions import ConnectionError as RedisConnectionError

from llmproxy._gen.access.v1 import access_pb2
from llmproxy._gen.authz.v1 import authz_pb2
from llmproxy.authz.admin import KeyAdmin
from llmproxy.authz.authorizer import Authorizer
from llmproxy.authz.introspection import LocalTokenVerifier
from llmproxy.authz.keys import CONTROL_TOKEN, KeyHasher
from llmproxy.authz.records import KeyRecord
from llmproxy.authz.service import AuthorizationServicer, AuthzControlServicer, header_safe
from llmproxy.authz.token_admin import ControlTokenAdmin
from llmproxy.common.audit import AuditEntry
from tests.unit.authz.fakes import Clock, FakeControlTokenStore, FakeKeyStore, FakeUsage
from tests.unit.authz.test_requests import check_request
from tests.unit.grpc_fakes import Aborted, FakeContext

HASHER = KeyHasher(b"k" * 32)
ADMIN_TOKEN = "admin-token-for-tests-" + "x" * 20
BODY = json.dumps(
    {"model": "gpt-4o-mini", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
).encode()


class Service:
    def __init__(self) -> None:
        self.store = FakeKeyStore()
        self.tokens = FakeControlTokenStore()
        self.usage = FakeUsage()
        self.clock = Clock()
        self.admin = KeyAdmin(self.store, HASHER, self.clock)
        self.check = AuthorizationServicer(Authorizer(self.store, HASHER, self.usage, self.clock))
        self.control = AuthzControlServicer(
            self.admin,
            ControlTokenAdmin(self.tokens, HASHER, self.clock),
            LocalTokenVerifier(self.tokens, HASHER, ADMIN_TOKEN, self.clock),
        )

    async def key(self, **fields: Any) -> tuple[KeyRecord, str]:
        return await self.admin.create(
            authz_pb2.CreateKeyRequest(tenant="acme", user="al", **fields)
        )

    async def run_check(
        self, headers: dict[str, str], body: bytes = BODY
    ) -> external_auth_pb2.CheckResponse:
        return await self.check.Check(check_request(headers, body), FakeContext())  # type: ignore[arg-type]


CONTEXT = FakeContext()


async def call(service: Service, method: str, request: object) -> Any:
    return await getattr(service.control, method)(request, CONTEXT)


async def refusal(service: Service, method: str, request: object) -> Aborted:
    with pytest.raises(Aborted) as raised:
        await call(service, method, request)
    return raised.value


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


async def test_a_control_token_sent_as_an_api_key_is_told_apart() -> None:
    service = Service()
    created = await service.control.CreateControlToken(
        authz_pb2.CreateControlTokenRequest(name="alice", role=access_pb2.ROLE_ADMIN),
        CONTEXT,  # type: ignore[arg-type]
    )
    for headers in ({"authorization": f"Bearer {created.secret}"}, {"x-api-key": created.secret}):
        status, response_headers, error = await denial(service, headers)
        assert (status, error["code"], error["type"]) == (
            401,
            "invalid_api_key",
            "invalid_request_error",
        )
        assert "control token (ct-llmp-...) is not an API key" in str(error["message"])
        assert created.secret not in str(error["message"])
        assert response_headers["www-authenticate"] == 'Bearer realm="llmproxy"'
    # A made-up one gets the same answer: it is the prefix that tells, not a lookup.
    status, _, error = await denial(
        service, {"authorization": f"Bearer {CONTROL_TOKEN.new('0' * 16)}"}
    )
    assert "is not an API key" in str(error["message"])


async def test_key_calls_answer_with_the_admin_operations_results() -> None:
    service = Service()
    created = await call(service, "CreateKey", authz_pb2.CreateKeyRequest(tenant="acme"))
    key_id = created.key.key_id
    assert created.secret.startswith(f"sk-llmp-{key_id}-")
    assert created.key.prefix == f"sk-llmp-{key_id}"
    fetched = await call(service, "GetKey", authz_pb2.GetKeyRequest(key_id=key_id))
    assert fetched.key == created.key
    listed = await call(service, "ListKeys", authz_pb2.ListKeysRequest())
    assert [k.key_id for k in listed.keys] == [key_id]
    request = authz_pb2.UpdateKeyRequest(key=authz_pb2.ApiKey(key_id=key_id, tier="gold"))
    request.update_mask.paths.append("tier")
    assert (await call(service, "UpdateKey", request)).key.tier == "gold"
    rotated = await call(service, "RotateKey", authz_pb2.RotateKeyRequest(key_id=key_id))
    assert rotated.secret != created.secret
    assert rotated.key.rotate_time.seconds > 0
    revoked = await call(
        service, "RevokeKey", authz_pb2.RevokeKeyRequest(key_id=key_id, reason="done")
    )
    assert (revoked.key.revoked, revoked.key.revoke_reason) == (True, "done")


@pytest.mark.parametrize(
    ("method", "message_in", "code", "message"),
    [
        ("GetKey", authz_pb2.GetKeyRequest(key_id="f" * 16), "NOT_FOUND", "no API key"),
        ("GetKey", authz_pb2.GetKeyRequest(key_id="nope"), "INVALID_ARGUMENT", "key_id:"),
        ("CreateKey", authz_pb2.CreateKeyRequest(), "INVALID_ARGUMENT", "tenant:"),
        (
            "CreateControlToken",
            authz_pb2.CreateControlTokenRequest(name="alice"),
            "INVALID_ARGUMENT",
            "role: required, one of viewer (ROLE_VIEWER), operator (ROLE_OPERATOR), admin "
            "(ROLE_ADMIN)",
        ),
        (
            "CreateControlToken",
            authz_pb2.CreateControlTokenRequest(role=access_pb2.ROLE_ADMIN),
            "INVALID_ARGUMENT",
            "name: required",
        ),
        (
            "RotateControlToken",
            authz_pb2.RotateControlTokenRequest(token_id="0" * 16),
            "NOT_FOUND",
            "no control token with token_id '0000000000000000'",
        ),
        (
            "RevokeControlToken",
            authz_pb2.RevokeControlTokenRequest(token_id="zz"),  # noqa: S106 - not a secret
            "INVALID_ARGUMENT",
            "token_id: 'zz' is not a control token id",
        ),
        (
            "ListControlTokens",
            authz_pb2.ListControlTokensRequest(page_token="nope"),  # noqa: S106
            "INVALID_ARGUMENT",
            "page_token:",
        ),
        (
            "ListAuditRecords",
            authz_pb2.ListAuditRecordsRequest(service="billing"),
            "INVALID_ARGUMENT",
            "service: 'billing' is not a service",
        ),
    ],
)
async def test_bad_requests_get_their_status_and_a_message(
    method: str, message_in: object, code: str, message: str
) -> None:
    refused = await refusal(Service(), method, message_in)
    assert refused.code.name == code
    assert refused.details.startswith(message)


async def test_control_token_calls_manage_tokens_and_never_return_a_hash() -> None:
    service = Service()
    created = await call(
        service,
        "CreateControlToken",
        authz_pb2.CreateControlTokenRequest(name="ci", role=access_pb2.ROLE_OPERATOR),
    )
    token = created.token
    assert created.secret.startswith(f"ct-llmp-{token.token_id}-")
    assert (token.name, token.role, token.revoked) == ("ci", access_pb2.ROLE_OPERATOR, False)
    assert token.create_time.seconds == int(service.clock.now)
    assert not token.HasField("expire_time")
    stored = service.tokens.records[token.token_id]
    assert stored.token_hash not in str(created)
    listed = await call(service, "ListControlTokens", authz_pb2.ListControlTokensRequest())
    assert list(listed.tokens) == [token]
    assert listed.next_page_token == ""
    rotated = await call(
        service,
        "RotateControlToken",
        authz_pb2.RotateControlTokenRequest(token_id=token.token_id, grace_period_seconds=60),
    )
    assert rotated.secret not in (created.secret, "")
    assert rotated.token.previous_secret_expire_time.seconds == int(service.clock.now) + 60
    revoked = await call(
        service,
        "RevokeControlToken",
        authz_pb2.RevokeControlTokenRequest(token_id=token.token_id, reason="left"),
    )
    assert (revoked.token.revoked, revoked.token.revoke_reason) == (True, "left")
    assert revoked.token.revoke_time.seconds == int(service.clock.now)
    refused = await refusal(
        service, "RotateControlToken", authz_pb2.RotateControlTokenRequest(token_id=token.token_id)
    )
    assert (refused.code, refused.details) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        f"control token {token.token_id} is revoked: it cannot be rotated",
    )
    listed = await call(service, "ListControlTokens", authz_pb2.ListControlTokensRequest())
    assert list(listed.tokens) == []


async def test_introspect_token_answers_as_the_local_verifier_does() -> None:
    service = Service()
    created = await call(
        service,
        "CreateControlToken",
        authz_pb2.CreateControlTokenRequest(name="bob", role=access_pb2.ROLE_VIEWER),
    )
    answer = await call(
        service, "IntrospectToken", authz_pb2.IntrospectTokenRequest(token=created.secret)
    )
    assert (answer.active, answer.token_id, answer.role, answer.name) == (
        True,
        created.token.token_id,
        access_pb2.ROLE_VIEWER,
        "bob",
    )
    admin = await call(
        service, "IntrospectToken", authz_pb2.IntrospectTokenRequest(token=ADMIN_TOKEN)
    )
    assert (admin.active, admin.token_id) == (True, "bootstrap-admin")
    bad = await call(service, "IntrospectToken", authz_pb2.IntrospectTokenRequest(token="x"))  # noqa: S106
    assert (bad.active, bad.reason) == (False, "malformed token")
    service.tokens.broken = RedisConnectionError("down")
    refused = await refusal(
        service, "IntrospectToken", authz_pb2.IntrospectTokenRequest(token=created.secret)
    )
    assert refused.code == grpc.StatusCode.UNAVAILABLE
    assert "store is unavailable" in refused.details


async def test_audit_records_carry_every_field_of_the_shared_trail() -> None:
    service = Service()
    service.store.add_audit(
        AuditEntry(
            time=1_800_000_000.5,
            method="CreateControlToken",
            actor="bootstrap-admin",
            peer="ipv4:127.0.0.1:1",
            outcome="OK",
            detail="",
            service="authz",
            role="admin",
            arguments='{"name":"ci","role":"ROLE_OPERATOR"}',
            token_id="0123456789abcdef",  # noqa: S106 - an id, not a secret
        )
    )
    service.store.add_audit(
        AuditEntry(
            time=1.0, method="Reload", actor="anonymous", peer="p", outcome="X", service="ratelimit"
        )
    )
    reply = await call(
        service, "ListAuditRecords", authz_pb2.ListAuditRecordsRequest(service="authz")
    )
    (record,) = reply.records
    assert (record.id, record.method, record.actor, record.outcome) == (
        "1-0",
        "CreateControlToken",
        "bootstrap-admin",
        "OK",
    )
    assert (record.service, record.role, record.token_id) == ("authz", "admin", "0123456789abcdef")
    assert record.arguments == '{"name":"ci","role":"ROLE_OPERATOR"}'
    assert record.time.ToNanoseconds() == 1_800_000_000_500_000_000


async def test_a_redis_failure_in_a_control_call_is_unavailable_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    service = Service()

    async def broken(*args: object) -> None:
        raise RedisConnectionError("redis://:hunter2@db refused")

    service.store.create = broken  # type: ignore[method-assign]
    refused = await refusal(service, "CreateKey", authz_pb2.CreateKeyRequest(tenant="acme"))
    assert (refused.code, refused.details) == (
        grpc.StatusCode.UNAVAILABLE,
        "key store unavailable",
    )
    service.tokens.broken = RedisConnectionError("redis://:hunter2@db refused")
    refused = await refusal(
        service,
        "CreateControlToken",
        authz_pb2.CreateControlTokenRequest(name="x", role=access_pb2.ROLE_ADMIN),
    )
    assert refused.code == grpc.StatusCode.UNAVAILABLE
    assert "key store unavailable" in [r.getMessage() for r in caplog.records]
    assert "hunter2" not in caplog.text


@pytest.mark.parametrize("model", ["bad\nmodel", "caf\u00e9", "x" * 300, ""])
def test_a_model_that_cannot_be_a_header_value_is_not_forwarded(model: str) -> None:
    assert not header_safe(model)


def test_ordinary_model_names_are_header_safe() -> None:
    assert header_safe("gpt-4o-mini")
    assert header_safe("meta-llama/Llama-3.1-8B-Instruct:free")


@pytest.mark.parametrize(
    "path",
    [
        "/v1/messages",
        "/v1/messages?beta=true",
        "/llmproxy.router.v1.AnthropicService/CreateMessage",
    ],
)
async def test_denials_on_anthropic_paths_take_anthropics_error_shape(path: str) -> None:
    service = Service()
    record, secret = await service.key(budget=authz_pb2.Budget(daily_usd=1))

    async def denied(headers: dict[str, str]) -> tuple[int, dict[str, str], object]:
        request = check_request(headers, BODY, path=path)
        response = await service.check.Check(request, FakeContext())  # type: ignore[arg-type]
        denied = response.denied_response
        headers_out = {h.header.key: h.header.value for h in denied.headers}
        return int(denied.status.code), headers_out, json.loads(denied.body)

    status, _, body = await denied({"x-api-key": "sk-nope"})
    assert (status, body) == (
        401,
        {
            "type": "error",
            "error": {"type": "authentication_error", "message": "Incorrect API key provided."},
        },
    )
    service.usage.spend[("key", record.key_id, "day")] = 1.5
    status, headers, body = await denied({"x-api-key": secret})
    assert status == 429
    assert body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert headers["x-should-retry"] == "false"


async def test_denials_elsewhere_keep_openais_shape() -> None:
    request = check_request({}, BODY, path="/v1/messagesx")
    response = await Service().check.Check(request, FakeContext())  # type: ignore[arg-type]
    assert json.loads(response.denied_response.body)["error"]["code"] == "missing_api_key"
