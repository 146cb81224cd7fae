"""Control tokens on a real authz server and real Redis: roles, the audit trail, rotation,
revocation, IntrospectToken, and Envoy's check refusing them as API keys."""

from __future__ import annotations

import json

import grpc
import pytest
import redis.asyncio as aioredis
from google.rpc import code_pb2

from llmproxy._gen.access.v1 import access_pb2
from llmproxy._gen.authz.v1 import authz_pb2, authz_pb2_grpc
from llmproxy.authz.store import token_key
from tests.harness.waiting import eventually
from tests.integration.authz.conftest import Instance, StartAuthz, admin_token, service_token

# Answers about tokens are trusted this long: a revocation shows within it.
SHORT_TOKEN_CACHE = {"control_token_cache_s": "0.2"}
API_KEY_REASON = (
    "an API key is not a control token: create one with CreateControlToken "
    "(python -m llmproxy.authz.cli tokens create)"
)


async def new_token(
    instance: Instance, role: int, name: str = "alice", **fields: object
) -> authz_pb2.CreateControlTokenResponse:
    reply: authz_pb2.CreateControlTokenResponse = await instance.admin.CreateControlToken(
        authz_pb2.CreateControlTokenRequest(name=name, role=role, **fields)  # type: ignore[arg-type]
    )
    return reply


async def status_of(call: object) -> grpc.StatusCode:
    try:
        await call  # type: ignore[misc]
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


async def test_each_role_reaches_what_it_may_and_no_further(start_authz: StartAuthz) -> None:
    instance = await start_authz()
    viewer = await instance.as_caller((await new_token(instance, access_pb2.ROLE_VIEWER)).secret)
    operator = await instance.as_caller(
        (await new_token(instance, access_pb2.ROLE_OPERATOR)).secret
    )
    admin = await instance.as_caller((await new_token(instance, access_pb2.ROLE_ADMIN)).secret)
    reads = authz_pb2.ListKeysRequest()
    assert await status_of(viewer.ListKeys(reads)) == grpc.StatusCode.OK
    assert await status_of(operator.ListKeys(reads)) == grpc.StatusCode.OK
    create = authz_pb2.CreateKeyRequest(tenant="acme")
    assert await status_of(viewer.CreateKey(create)) == grpc.StatusCode.PERMISSION_DENIED
    assert await status_of(operator.CreateKey(create)) == grpc.StatusCode.PERMISSION_DENIED
    assert await status_of(admin.CreateKey(create)) == grpc.StatusCode.OK
    # Who holds which role is token management: admins only, even to read.
    tokens = authz_pb2.ListControlTokensRequest()
    assert await status_of(viewer.ListControlTokens(tokens)) == grpc.StatusCode.PERMISSION_DENIED
    assert await status_of(operator.ListControlTokens(tokens)) == grpc.StatusCode.PERMISSION_DENIED
    listed = await admin.ListControlTokens(tokens)
    assert [(t.name, t.role) for t in listed.tokens] == [
        ("alice", access_pb2.ROLE_VIEWER),
        ("alice", access_pb2.ROLE_OPERATOR),
        ("alice", access_pb2.ROLE_ADMIN),
    ]
    # An admin control token can make more of them; the bootstrap token is not needed.
    made = await admin.CreateControlToken(
        authz_pb2.CreateControlTokenRequest(name="ci", role=access_pb2.ROLE_VIEWER)
    )
    assert made.secret.startswith(f"ct-llmp-{made.token.token_id}-")


async def test_token_management_is_audited_without_secrets(start_authz: StartAuthz) -> None:
    instance = await start_authz()
    created = await new_token(instance, access_pb2.ROLE_OPERATOR, name="bob")
    token_id = created.token.token_id
    operator = await instance.as_caller(created.secret)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await operator.RevokeControlToken(authz_pb2.RevokeControlTokenRequest(token_id=token_id))
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert raised.value.details() == (
        "RevokeControlToken needs a control token of role admin or above; the caller's role is "
        "operator"
    )
    rotated = await instance.admin.RotateControlToken(
        authz_pb2.RotateControlTokenRequest(token_id=token_id, grace_period_seconds=60)
    )
    audit = await instance.admin.ListAuditRecords(
        authz_pb2.ListAuditRecordsRequest(service="authz")
    )
    newest_first = [(r.method, r.outcome, r.actor, r.role) for r in audit.records]
    assert newest_first == [
        ("RotateControlToken", "OK", "bootstrap-admin", "admin"),
        ("RevokeControlToken", "PERMISSION_DENIED", f"token:{token_id}", "operator"),
        ("CreateControlToken", "OK", "bootstrap-admin", "admin"),
    ]
    assert all(r.token_id == token_id and r.service == "authz" for r in audit.records)
    assert json.loads(audit.records[2].arguments) == {"name": "bob", "role": "ROLE_OPERATOR"}
    text = str(audit)
    for secret in (created.secret, rotated.secret, admin_token()):
        assert secret not in text
    other = await instance.admin.ListAuditRecords(
        authz_pb2.ListAuditRecordsRequest(service="router")
    )
    assert list(other.records) == []


async def test_a_revoked_token_is_refused_within_the_token_cache(
    start_authz: StartAuthz,
) -> None:
    instance = await start_authz(**SHORT_TOKEN_CACHE)
    created = await new_token(instance, access_pb2.ROLE_VIEWER)
    viewer = await instance.as_caller(created.secret)
    await viewer.ListKeys(authz_pb2.ListKeysRequest())  # cached as valid now
    await instance.admin.RevokeControlToken(
        authz_pb2.RevokeControlTokenRequest(token_id=created.token.token_id, reason="left")
    )

    async def refusal() -> str:
        try:
            await viewer.ListKeys(authz_pb2.ListKeysRequest(), timeout=5)
        except grpc.aio.AioRpcError as exc:
            return f"{exc.code().name}: {exc.details()}"
        return "OK"

    await eventually(
        refusal,
        lambda found: found == "UNAUTHENTICATED: the control token is not valid: revoked",
        what="the revoked token refused",
        timeout_s=5,
    )


async def test_an_old_secret_works_for_its_grace_only(start_authz: StartAuthz) -> None:
    instance = await start_authz(**SHORT_TOKEN_CACHE)
    created = await new_token(instance, access_pb2.ROLE_VIEWER)
    token_id = created.token.token_id
    old = await instance.as_caller(created.secret)
    rotated = await instance.admin.RotateControlToken(
        authz_pb2.RotateControlTokenRequest(token_id=token_id, grace_period_seconds=3600)
    )
    new = await instance.as_caller(rotated.secret)
    assert await status_of(old.ListKeys(authz_pb2.ListKeysRequest())) == grpc.StatusCode.OK
    assert await status_of(new.ListKeys(authz_pb2.ListKeysRequest())) == grpc.StatusCode.OK
    await instance.admin.RotateControlToken(
        authz_pb2.RotateControlTokenRequest(token_id=token_id)  # no grace: ends both at once
    )
    for stub in (old, new):

        async def code(stub: authz_pb2_grpc.AuthzServiceStub = stub) -> grpc.StatusCode:
            return await status_of(stub.ListKeys(authz_pb2.ListKeysRequest(), timeout=5))

        await eventually(
            code,
            lambda found: found == grpc.StatusCode.UNAUTHENTICATED,
            what="a replaced secret refused",
            timeout_s=5,
        )


async def test_introspect_token_is_for_the_stacks_services_only(start_authz: StartAuthz) -> None:
    instance = await start_authz()
    created = await new_token(instance, access_pb2.ROLE_OPERATOR, name="ci")
    request = authz_pb2.IntrospectTokenRequest(token=created.secret)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await instance.admin.IntrospectToken(request)  # the bootstrap admin is a person
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "the stack's service token" in (raised.value.details() or "")
    service = await instance.as_caller(service_token())
    answer = await service.IntrospectToken(request)
    assert (answer.active, answer.token_id, answer.role, answer.name) == (
        True,
        created.token.token_id,
        access_pb2.ROLE_OPERATOR,
        "ci",
    )
    key = await instance.admin.CreateKey(authz_pb2.CreateKeyRequest(tenant="acme"))
    refused = await service.IntrospectToken(authz_pb2.IntrospectTokenRequest(token=key.secret))
    assert (refused.active, refused.reason) == (False, API_KEY_REASON)
    garbage = await service.IntrospectToken(authz_pb2.IntrospectTokenRequest(token="hello"))  # noqa: S106
    assert (garbage.active, garbage.reason) == (False, "malformed token")
    bootstrap = await service.IntrospectToken(authz_pb2.IntrospectTokenRequest(token=admin_token()))
    assert (bootstrap.active, bootstrap.token_id) == (True, "bootstrap-admin")


async def test_an_api_key_is_no_control_token_and_a_control_token_no_api_key(
    start_authz: StartAuthz,
) -> None:
    instance = await start_authz()
    key = await instance.admin.CreateKey(authz_pb2.CreateKeyRequest(tenant="acme"))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await (await instance.as_caller(key.secret)).ListKeys(authz_pb2.ListKeysRequest())
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert raised.value.details() == f"the control token is not valid: {API_KEY_REASON}"
    created = await new_token(instance, access_pb2.ROLE_ADMIN)
    denied = await instance.check(created.secret)
    assert denied.status.code == code_pb2.UNAUTHENTICATED
    assert denied.denied_response.status.code == 401
    error = json.loads(denied.denied_response.body)["error"]
    assert error["code"] == "invalid_api_key"
    assert error["message"].startswith("A control token (ct-llmp-...) is not an API key")
    assert (await instance.check(key.secret)).status.code == code_pb2.OK


async def test_bad_token_requests_get_clear_statuses(start_authz: StartAuthz) -> None:
    instance = await start_authz()
    cases = [
        (
            instance.admin.CreateControlToken(authz_pb2.CreateControlTokenRequest(name="x")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "role: required, one of viewer (ROLE_VIEWER), operator (ROLE_OPERATOR), admin "
            "(ROLE_ADMIN)",
        ),
        (
            instance.admin.RevokeControlToken(
                authz_pb2.RevokeControlTokenRequest(token_id="0" * 16)
            ),
            grpc.StatusCode.NOT_FOUND,
            "no control token with token_id '0000000000000000'",
        ),
        (
            instance.admin.RotateControlToken(
                authz_pb2.RotateControlTokenRequest(token_id="0" * 16, grace_period_seconds=-5)
            ),
            grpc.StatusCode.INVALID_ARGUMENT,
            "grace_period_seconds: must be between 0 and 2592000 (30 days)",
        ),
    ]
    for call, code, message in cases:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await call
        assert (raised.value.code(), raised.value.details()) == (code, message)
    created = await new_token(instance, access_pb2.ROLE_VIEWER)
    await instance.admin.RevokeControlToken(
        authz_pb2.RevokeControlTokenRequest(token_id=created.token.token_id)
    )
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await instance.admin.RotateControlToken(
            authz_pb2.RotateControlTokenRequest(token_id=created.token.token_id)
        )
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_only_the_hash_of_a_token_is_stored(
    start_authz: StartAuthz, redis_client: aioredis.Redis
) -> None:
    instance = await start_authz()
    created = await new_token(instance, access_pb2.ROLE_ADMIN)
    token_id = created.token.token_id
    stored = json.loads(await redis_client.get(token_key(token_id)))
    assert (stored["token_id"], stored["role"], stored["version"]) == (token_id, "admin", 1)
    secret_part = created.secret.removeprefix(f"ct-llmp-{token_id}-").encode()
    everything = b"".join(
        [await redis_client.dump(key) or b"" async for key in redis_client.scan_iter()]
    )
    assert len(secret_part) == 43
    assert secret_part not in everything
    assert token_id.encode() in everything  # the dump is real
