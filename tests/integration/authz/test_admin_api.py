"""The control API of a real authz server on real Redis: credentials, codes, audit, budgets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
import redis.asyncio as aioredis
import yaml
from google.rpc import code_pb2

from llmproxy._gen.authz.v1 import authz_pb2
from llmproxy.common.usage import Identity, RedisUsageStore, Usage
from llmproxy.config import DEFAULT_CONFIG, load_config
from llmproxy.devstack.authz import create_demo_key
from llmproxy.devstack.process import StartupError
from tests.harness.configs import stack_config_data
from tests.integration.authz.conftest import StartAuthz, admin_token


@pytest.mark.parametrize(
    ("token", "detail"),
    [
        (None, "control calls need the metadata 'authorization: Bearer <control token>'"),
        ("not-the-token-" + "x" * 30, "the control token is not valid: malformed token"),
    ],
)
async def test_control_calls_need_a_valid_token_and_refusals_are_audited(
    start_authz: StartAuthz, token: str | None, detail: str
) -> None:
    instance = await start_authz()
    stub = await instance.as_caller(token)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.CreateKey(authz_pb2.CreateKeyRequest(tenant="acme"))
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert raised.value.details() == detail
    audit = await instance.admin.ListAuditRecords(authz_pb2.ListAuditRecordsRequest())
    (record,) = audit.records
    assert (record.method, record.outcome, record.actor, record.service) == (
        "CreateKey",
        "UNAUTHENTICATED",
        "anonymous",
        "authz",
    )
    assert record.tenant == "acme"
    assert "not-the-token" not in str(record)


async def test_bad_input_gets_invalid_argument_naming_the_field(start_authz: StartAuthz) -> None:
    instance = await start_authz()
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await instance.admin.CreateKey(authz_pb2.CreateKeyRequest(tenant="acme", tier="no spaces"))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (raised.value.details() or "").startswith("tier:")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await instance.admin.GetKey(authz_pb2.GetKeyRequest(key_id="0" * 16))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_the_secret_is_returned_once_and_stored_only_hashed(
    start_authz: StartAuthz, redis_client: aioredis.Redis
) -> None:
    instance = await start_authz()
    created = await instance.admin.CreateKey(
        authz_pb2.CreateKeyRequest(tenant="acme", user="alice")
    )
    assert created.secret.startswith(f"sk-llmp-{created.key.key_id}-")
    fetched = await instance.admin.GetKey(authz_pb2.GetKeyRequest(key_id=created.key.key_id))
    assert created.secret not in str(fetched)
    listed = await instance.admin.ListKeys(authz_pb2.ListKeysRequest(tenant="acme"))
    assert [k.key_id for k in listed.keys] == [created.key.key_id]
    everything = b"".join(
        [await redis_client.dump(key) or b"" async for key in redis_client.scan_iter()]
    )
    # The random part may itself hold "-": cut the known prefix rather than split on it.
    secret_part = created.secret.removeprefix(f"sk-llmp-{created.key.key_id}-").encode()
    assert len(secret_part) >= 20
    assert secret_part not in everything
    assert created.key.key_id.encode() in everything  # the dump is real


async def test_a_key_over_its_budget_is_refused_from_recorded_spend(
    start_authz: StartAuthz, redis_client: aioredis.Redis
) -> None:
    instance = await start_authz()
    created = await instance.admin.CreateKey(
        authz_pb2.CreateKeyRequest(tenant="acme", budget=authz_pb2.Budget(daily_usd=0.5))
    )
    assert (await instance.check(created.secret)).status.code == code_pb2.OK
    identity = Identity(tenant="acme", user="default", key_id=created.key.key_id)
    await RedisUsageStore(redis_client).record(identity, "gpt-4o-mini", Usage(100, 100, 0.6))
    denied = await instance.check(created.secret)
    assert denied.status.code == code_pb2.RESOURCE_EXHAUSTED
    assert denied.denied_response.status.code == 429
    assert json.loads(denied.denied_response.body)["error"]["code"] == "budget_exceeded"


def test_the_service_refuses_to_start_without_its_hmac_secret(tmp_path: Path) -> None:
    path = tmp_path / "llmproxy.yaml"
    path.write_text(yaml.safe_dump(stack_config_data()))
    done = subprocess.run(
        [sys.executable, "-m", "llmproxy.authz", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={"PATH": "/usr/bin:/bin", "LLMPROXY_ADMIN_TOKEN": admin_token()},
    )
    assert done.returncode == 2, done.stderr
    assert "llmproxy.authz: $LLMPROXY_AUTHZ_HMAC_SECRET is not set" in done.stderr
    assert "Traceback" not in done.stderr


async def test_the_devstack_demo_key_works_and_a_refusal_is_a_startup_error(
    start_authz: StartAuthz,
) -> None:
    instance = await start_authz()
    config = load_config(
        DEFAULT_CONFIG, {"LLMPROXY__SERVICES__AUTHZ__GRPC_PORT": str(instance.running.port)}
    )
    key = await create_demo_key(config, admin_token())
    assert (await instance.check(key)).status.code == code_pb2.OK
    with pytest.raises(StartupError, match="could not create the demo API key"):
        await create_demo_key(config, "wrong")
