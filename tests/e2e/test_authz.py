"""Authorization through Envoy, as clients see it: the official SDK's typed errors, budgets,
revocation, and keys that never reach a log."""

from __future__ import annotations

import asyncio
import time

import grpc
import httpx
import openai
import pytest

from llmproxy._gen.authz.v1 import authz_pb2, authz_pb2_grpc
from llmproxy._gen.router.v1 import chat_pb2, chat_pb2_grpc
from llmproxy.common.redis import connect_redis
from llmproxy.common.usage import Identity, RedisUsageStore, Usage
from llmproxy.devstack.stack import Stack
from tests.e2e.conftest import admin_metadata, create_key
from tests.harness.waiting import eventually_sync

HELLO = [{"role": "user", "content": "Hello through Envoy"}]
DEADLINE_S = 5.0


def sdk(gateway_url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway_url, api_key=key, max_retries=0)


def chat(gateway_url: str, key: str, model: str = "gpt-4o-mini") -> None:
    with sdk(gateway_url, key) as client:
        client.chat.completions.create(model=model, messages=HELLO)  # type: ignore[arg-type]


def admin(stack: Stack, method: str, request: object) -> object:
    envoy = stack.config.envoy
    with grpc.insecure_channel(f"{envoy.host}:{envoy.control_port}") as channel:
        stub = authz_pb2_grpc.AuthzServiceStub(channel)
        return getattr(stub, method)(request, metadata=admin_metadata(stack), timeout=10)


def denial(gateway_url: str, key: str) -> str | None:
    """The code of the permission error a chat with key gets (None: it was answered)."""
    try:
        chat(gateway_url, key)
    except openai.PermissionDeniedError as error:
        return str(error.code)
    return None


def until_denied(gateway_url: str, key: str, code: str | None = None) -> None:
    """Wait until a chat with key is refused (with code, if given): the change arrived."""
    eventually_sync(
        lambda: denial(gateway_url, key),
        lambda found: found is not None and code in (None, found),
        what=f"a chat refused with {code or 'any code'}",
        timeout_s=DEADLINE_S,
    )


def test_no_key_is_401_with_an_openai_error(gateway_url: str) -> None:
    response = httpx.post(
        f"{gateway_url}/chat/completions", json={"model": "gpt-4o-mini", "messages": HELLO}
    )
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/json"
    assert response.headers["www-authenticate"] == 'Bearer realm="llmproxy"'
    error = response.json()["error"]
    assert error["code"] == "missing_api_key"
    assert "Authorization: Bearer" in error["message"]


@pytest.mark.parametrize("key", ["sk-wrong", "sk-llmp-0123456789abcdef-" + "A" * 43])
def test_sdk_raises_authentication_error_for_unknown_keys(gateway_url: str, key: str) -> None:
    with pytest.raises(openai.AuthenticationError) as raised:
        chat(gateway_url, key)
    assert raised.value.status_code == 401
    assert raised.value.code == "invalid_api_key"
    assert key not in raised.value.response.text


def test_a_wrong_secret_for_a_real_key_id_is_401(gateway_url: str, client_api_key: str) -> None:
    forged = client_api_key[:-4] + ("AAAA" if not client_api_key.endswith("AAAA") else "BBBB")
    with pytest.raises(openai.AuthenticationError):
        chat(gateway_url, forged)


def test_the_anthropic_sdks_x_api_key_header_works(gateway_url: str, client_api_key: str) -> None:
    response = httpx.post(
        f"{gateway_url}/chat/completions",
        json={"model": "gpt-4o-mini", "messages": HELLO},
        headers={"x-api-key": client_api_key},
    )
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"].endswith("Hello through Envoy")


def test_sdk_raises_permission_denied_for_a_model_the_key_may_not_use(
    stack_logs: Stack, gateway_url: str
) -> None:
    key = create_key(stack_logs, tenant="e2e", allowed_models=["gpt-4o*"]).secret
    chat(gateway_url, key, "gpt-4o-mini")  # the wildcard allows it
    with pytest.raises(openai.PermissionDeniedError) as raised:
        chat(gateway_url, key, "llama-3.1-8b")
    assert raised.value.status_code == 403
    assert raised.value.code == "model_not_allowed"
    assert "llama-3.1-8b" in raised.value.message


def test_sdk_raises_permission_denied_once_a_key_is_revoked(
    stack_logs: Stack, gateway_url: str
) -> None:
    created = create_key(stack_logs, tenant="e2e")
    chat(gateway_url, created.secret)
    admin(stack_logs, "RevokeKey", authz_pb2.RevokeKeyRequest(key_id=created.key.key_id))

    until_denied(gateway_url, created.secret, "api_key_revoked")


def test_sdk_raises_permission_denied_once_a_key_expires(
    stack_logs: Stack, gateway_url: str
) -> None:
    expire = authz_pb2.CreateKeyRequest().expire_time
    expire.FromNanoseconds(time.time_ns() + 1_000_000_000)
    key = create_key(stack_logs, tenant="e2e", expire_time=expire).secret

    until_denied(gateway_url, key, "api_key_expired")


def test_a_spent_budget_is_429_with_the_services_json_intact(
    stack_logs: Stack, gateway_url: str
) -> None:
    created = create_key(stack_logs, tenant="e2e", budget=authz_pb2.Budget(monthly_usd=1.0))
    chat(gateway_url, created.secret)

    async def spend() -> None:
        redis = connect_redis(stack_logs.config.redis)
        identity = Identity(tenant="e2e", user="default", key_id=created.key.key_id)
        try:
            await RedisUsageStore(redis).record(identity, "gpt-4o-mini", Usage(10, 10, 1.25))
        finally:
            await redis.aclose()

    asyncio.run(spend())
    with pytest.raises(openai.RateLimitError) as raised:
        chat(gateway_url, created.secret)
    error = raised.value
    assert error.status_code == 429
    assert error.code == "budget_exceeded"
    assert error.type == "insufficient_quota"
    assert "monthly budget of $1.00 ($1.25 so far)" in error.message
    # Not rewritten by the listener's 429 mapper, and the SDKs are told not to retry.
    assert error.response.headers["x-should-retry"] == "false"
    assert error.response.headers["content-type"] == "application/json"


def test_secrets_never_reach_a_log(stack_logs: Stack, gateway_url: str) -> None:
    """Keys used every way (allowed, wrong secret, rotated, revoked) appear in no log."""
    created = create_key(stack_logs, tenant="e2e-leak", user="leaker")
    key_id = created.key.key_id
    chat(gateway_url, created.secret)
    wrong = created.secret[:-4] + ("AAAA" if not created.secret.endswith("AAAA") else "BBBB")
    with pytest.raises(openai.AuthenticationError):
        chat(gateway_url, wrong)
    rotated = admin(
        stack_logs, "RotateKey", authz_pb2.RotateKeyRequest(key_id=key_id, grace_period_seconds=60)
    )
    new_secret: str = rotated.secret  # type: ignore[attr-defined]
    chat(gateway_url, new_secret)
    admin(stack_logs, "RevokeKey", authz_pb2.RevokeKeyRequest(key_id=key_id, reason="test"))

    until_denied(gateway_url, new_secret)
    logs = {p.name: p.read_text(errors="replace") for p in (stack_logs.workdir / "logs").iterdir()}
    # Metrics and stats are outputs too: the authz service's /metrics and Envoy's /stats.
    config = stack_logs.config
    authz_metrics = f"http://{config.services.authz.host}:{config.services.authz.metrics_port}"
    logs["authz /metrics"] = httpx.get(f"{authz_metrics}/metrics").text
    logs["envoy /stats"] = httpx.get(
        f"http://{config.envoy.host}:{config.envoy.admin_port}/stats"
    ).text
    assert 'llmproxy_authz_decisions_total{decision="api_key_revoked"}' in logs["authz /metrics"]
    token = stack_logs.environ[stack_logs.config.control.admin_token_env]
    hmac_secret = stack_logs.environ[stack_logs.config.services.authz.hmac_secret_env]
    for name, text in logs.items():
        for secret in (created.secret, wrong, new_secret, token, hmac_secret):
            assert secret not in text, f"a secret is in {name}"
        # Not even the random part of a key, in case something reformats the prefix (the part
        # may hold "-" itself: cut the known prefix rather than split on it).
        assert created.secret.removeprefix(f"sk-llmp-{key_id}-") not in text, name
    # The logs are real and name the key by its id: the revocation was logged as a denial.
    assert f"The API key {key_id} has been revoked." in logs["authz.log"]
    assert key_id in logs["authz.log"]


def test_grpc_clients_get_the_same_model_check(stack_logs: Stack) -> None:
    """The typed ChatService on the client listener cannot sidestep the allowed models."""
    key = create_key(stack_logs, tenant="e2e", allowed_models=["gpt-4o*"]).secret
    envoy = stack_logs.config.envoy
    metadata = (("authorization", f"Bearer {key}"),)
    request = chat_pb2.ChatRequest(
        model="llama-3.1-8b", messages=[chat_pb2.ChatMessage(role="user", content="hi")]
    )
    with grpc.insecure_channel(f"{envoy.host}:{envoy.listener_port}") as channel:
        stub = chat_pb2_grpc.ChatServiceStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            stub.Chat(request, metadata=metadata, timeout=10)
        assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]
        request.model = "gpt-4o-mini"
        assert stub.Chat(request, metadata=metadata, timeout=10).content
        with pytest.raises(grpc.RpcError) as raised:
            stub.Chat(request, timeout=10)
        assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED  # type: ignore[attr-defined]
