"""authz's own answer about a control token: whose it is, or why it is refused."""

from __future__ import annotations

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from llmproxy._gen.access.v1 import access_pb2
from llmproxy._gen.authz.v1 import authz_pb2
from llmproxy.authz.introspection import LocalTokenVerifier
from llmproxy.authz.keys import CONTROL_TOKEN, KeyHasher, new_key, new_key_id
from llmproxy.authz.token_admin import ControlTokenAdmin
from llmproxy.common.access import BOOTSTRAP_ADMIN, Role
from llmproxy.common.timestamps import timestamp
from llmproxy.common.token_check import AuthzUnavailable
from tests.unit.authz.fakes import Clock, FakeControlTokenStore

HASHER = KeyHasher(b"k" * 32)
ADMIN_TOKEN = "bootstrap-" + "a" * 40
API_KEY_REASON = (
    "an API key is not a control token: create one with CreateControlToken "
    "(python -m llmproxy.authz.cli tokens create)"
)


class Tokens:
    def __init__(self, admin_token: str | None = ADMIN_TOKEN) -> None:
        self.store = FakeControlTokenStore()
        self.clock = Clock()
        self.admin = ControlTokenAdmin(self.store, HASHER, self.clock)
        self.verifier = LocalTokenVerifier(self.store, HASHER, admin_token, self.clock)

    async def create(self, **fields: object) -> tuple[str, str]:
        values: dict[str, object] = {"name": "alice", "role": access_pb2.ROLE_OPERATOR, **fields}
        record, secret = await self.admin.create(
            authz_pb2.CreateControlTokenRequest(**values)  # type: ignore[arg-type]
        )
        return record.token_id, secret

    async def reason(self, token: str) -> str:
        answer = await self.verifier.answer(token)
        assert not answer.active
        assert (answer.token_id, answer.role, answer.name) == ("", 0, "")
        found = await self.verifier.introspect(token)
        assert found.caller is None
        assert found.reason == answer.reason
        return answer.reason


async def test_a_valid_token_names_its_holder_and_role() -> None:
    tokens = Tokens()
    token_id, secret = await tokens.create(role=access_pb2.ROLE_VIEWER)
    answer = await tokens.verifier.answer(secret)
    assert (answer.active, answer.token_id, answer.role, answer.name, answer.reason) == (
        True,
        token_id,
        access_pb2.ROLE_VIEWER,
        "alice",
        "",
    )
    assert not answer.HasField("expire_time")
    found = await tokens.verifier.introspect(secret)
    assert found.caller is not None
    assert (found.caller.actor, found.caller.role, found.caller.name) == (
        f"token:{token_id}",
        Role.VIEWER,
        "alice",
    )
    assert found.expires_at is None


async def test_an_answer_expires_with_its_token() -> None:
    tokens = Tokens()
    expires = tokens.clock.now + 3600
    _, secret = await tokens.create(expire_time=timestamp(expires))
    answer = await tokens.verifier.answer(secret)
    assert answer.active
    assert answer.expire_time.ToSeconds() == expires
    assert (await tokens.verifier.introspect(secret)).expires_at == expires


async def test_the_bootstrap_admin_token_is_the_bootstrap_admin() -> None:
    tokens = Tokens()
    answer = await tokens.verifier.answer(ADMIN_TOKEN)
    assert (answer.active, answer.token_id, answer.role) == (
        True,
        "bootstrap-admin",
        access_pb2.ROLE_ADMIN,
    )
    assert (await tokens.verifier.introspect(ADMIN_TOKEN)).caller == BOOTSTRAP_ADMIN
    assert await tokens.reason(ADMIN_TOKEN + "x") == "malformed token"
    assert await tokens.reason(ADMIN_TOKEN[:-1]) == "malformed token"


async def test_without_a_bootstrap_admin_token_nothing_passes_for_it() -> None:
    tokens = Tokens(admin_token=None)
    assert await tokens.reason(ADMIN_TOKEN) == "malformed token"
    assert await tokens.reason("") == "malformed token"


@pytest.mark.parametrize(
    "token",
    [
        new_key(new_key_id()),
        "sk-llmp-",  # malformed, but plainly meant as an API key
        "sk-llmp-0123456789abcdef-short",
    ],
)
async def test_an_api_key_is_refused_with_directions(token: str) -> None:
    assert await Tokens().reason(token) == API_KEY_REASON


@pytest.mark.parametrize(
    "token",
    [
        "",
        "hello",
        "Bearer x",
        "ct-llmp-",
        "ct-llmp-0123456789abcdef",
        "ct-llmp-0123456789abcdef-" + "a" * 42,
        "ct-llmp-0123456789abcdef-" + "a" * 43 + "\n",
        "sk-proj-" + "a" * 40,  # OpenAI's, not ours
        "x" * 100_000,
        "\udcff",  # not even encodable
    ],
)
async def test_anything_else_is_malformed(token: str) -> None:
    assert await Tokens().reason(token) == "malformed token"


async def test_unknown_ids_and_wrong_secrets_are_one_unknown_token() -> None:
    tokens = Tokens()
    token_id, secret = await tokens.create()
    assert await tokens.reason(CONTROL_TOKEN.new("0" * 16)) == "unknown token"
    # A known id with another secret tells nothing about the token it names.
    assert await tokens.reason(CONTROL_TOKEN.new(token_id)) == "unknown token"
    assert (await tokens.verifier.answer(secret)).active


async def test_a_revoked_token_is_refused_as_revoked() -> None:
    tokens = Tokens()
    token_id, secret = await tokens.create()
    await tokens.admin.revoke(authz_pb2.RevokeControlTokenRequest(token_id=token_id))
    assert await tokens.reason(secret) == "revoked"
    # Only the secret's holder learns that it was revoked.
    assert await tokens.reason(CONTROL_TOKEN.new(token_id)) == "unknown token"


async def test_an_expired_token_is_refused_as_expired() -> None:
    tokens = Tokens()
    _, secret = await tokens.create(expire_time=timestamp(tokens.clock.now + 60))
    tokens.clock.now += 59
    assert (await tokens.verifier.answer(secret)).active
    tokens.clock.now += 1
    assert await tokens.reason(secret) == "expired"


async def test_an_old_secret_works_within_its_grace_and_no_answer_outlives_it() -> None:
    tokens = Tokens()
    token_id, old = await tokens.create(expire_time=timestamp(tokens.clock.now + 7200))
    _, new = await tokens.admin.rotate(
        authz_pb2.RotateControlTokenRequest(token_id=token_id, grace_period_seconds=600)
    )
    grace_ends = tokens.clock.now + 600
    before = await tokens.verifier.answer(old)
    assert before.active
    assert before.expire_time.ToSeconds() == grace_ends  # sooner than the token's expiry
    assert (await tokens.verifier.answer(new)).expire_time.ToSeconds() == tokens.clock.now + 7200
    tokens.clock.now = grace_ends
    assert await tokens.reason(old) == "unknown token"
    assert (await tokens.verifier.answer(new)).active


async def test_a_rotation_without_grace_ends_the_old_secret_at_once() -> None:
    tokens = Tokens()
    token_id, old = await tokens.create()
    _, new = await tokens.admin.rotate(authz_pb2.RotateControlTokenRequest(token_id=token_id))
    assert await tokens.reason(old) == "unknown token"
    assert (await tokens.verifier.answer(new)).active


async def test_a_store_failure_is_authz_unavailable_without_its_details() -> None:
    tokens = Tokens()
    _, secret = await tokens.create()
    tokens.store.broken = RedisConnectionError("redis://:hunter2@db:6379 refused")
    with pytest.raises(AuthzUnavailable, match="store is unavailable") as raised:
        await tokens.verifier.introspect(secret)
    assert "hunter2" not in str(raised.value)
    # What needs no store still gets an answer.
    assert (await tokens.verifier.answer(ADMIN_TOKEN)).active
    assert await tokens.reason("hello") == "malformed token"
